from storesync.cli import main

main()

from storesync.cli import entry

entry()

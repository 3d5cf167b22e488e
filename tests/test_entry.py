"""The entry point leaves without Python's finalization (storesync.cli.entry): exit codes,
output and exit handlers must come out as Python's own exit would give them."""

import subprocess
import sys


def entry(argv: list[str], before: str = "") -> subprocess.CompletedProcess:
    code = (f"import sys\n{before}\nsys.argv = ['storesync', *{argv!r}]\n"
            "from storesync.cli import entry\nentry()\nprint('not reached')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_exit_codes_output_and_exit_handlers_survive_the_quick_exit(tmp_path, pki):
    bundle = tmp_path / "a.pem"
    bundle.write_bytes(pki.ca("Entry Root").pem)
    listed = entry(["list", "--json", f"pem:{bundle}"], "import atexit; atexit.register(print, 'handler ran')")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.endswith("handler ran\n") and '"entries"' in listed.stdout
    assert "not reached" not in listed.stdout
    missing = entry(["list", f"pem:{tmp_path / 'none.pem'}"])
    assert missing.returncode == 2 and "none.pem" in missing.stderr and "Traceback" not in missing.stderr
    different = entry(["diff", f"pem:{bundle}", f"pem:{bundle}"])
    assert different.returncode == 0 and different.stdout.startswith("same")


def test_with_another_thread_alive_python_exits_as_usual(tmp_path, pki):
    """A thread still running at the end keeps Python's own exit, which waits for it."""
    bundle = tmp_path / "a.pem"
    bundle.write_bytes(pki.ca("Entry Root").pem)
    started = ("import threading, time\n"
               "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()")
    result = entry(["list", "--json", f"pem:{bundle}"], started)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("thread done")

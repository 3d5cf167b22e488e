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


def test_output_to_a_full_device_is_one_sentence_and_exit_2(tmp_path, pki):
    """`storesync ... > /dev/full` (or a full disk): each command, on the quick path and through
    typer, buffered or not, says so in one line instead of a traceback."""
    import os

    bundle = tmp_path / "a.pem"
    bundle.write_bytes(b"".join(pki.ca(f"Full Root {i}").pem for i in range(40)))
    commands = [["list", f"pem:{bundle}"], ["list", "--json", f"pem:{bundle}"], ["diff", f"pem:{bundle}", f"dir:{tmp_path}"],
                ["check", str(bundle), "--store", f"pem:{bundle}"], ["status"], ["--help"],
                ["sync", f"pem:{bundle}", f"pem:{tmp_path / 'copy.pem'}"]]
    for unbuffered in ("", "1"):
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered, "STORESYNC_ROOT": str(tmp_path), "COLUMNS": "100"}
        for argv in commands:
            with open("/dev/full", "w") as full:
                result = subprocess.run([sys.executable, "-m", "storesync", *argv], stdout=full, stderr=subprocess.PIPE,
                                        text=True, env=env)
            assert result.returncode == 2, (argv, result.stderr)
            assert result.stderr.startswith("storesync: cannot write the output to standard output (No space left"), \
                (argv, result.stderr)
            assert result.stderr.count("\n") == 1, (argv, result.stderr)
            assert ("stays written" in result.stderr) == (argv[0] == "sync"), (argv, result.stderr)

"""Standard output that cannot take the output at all: opened for reading only (`1</dev/null`)
or closed (`>&-`). Like `> /dev/full`: one sentence and exit 2, never a traceback (whose exit
code 1 would read as "the stores differ" to a script running `diff` or `check`)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_with_stdout(argv, stdout_fd: int | None, env) -> subprocess.CompletedProcess:
    """Run the CLI with its fd 1 set to `stdout_fd` (None: closed)."""
    def child():
        if stdout_fd is None:
            os.close(1)
        else:
            os.dup2(stdout_fd, 1)

    return subprocess.run([sys.executable, "-m", "storesync", *argv], stdout=None, stderr=subprocess.PIPE,
                          text=True, env=env, preexec_fn=child)


def test_stdout_read_only_or_closed_is_one_sentence_and_exit_2(tmp_path, pki):
    bundle = tmp_path / "a.pem"
    bundle.write_bytes(b"".join(pki.ca(f"Closed Root {i}").pem for i in range(5)))
    copy = tmp_path / "copy.pem"
    env = {**os.environ, "COLUMNS": "100"}
    commands = [["list", f"pem:{bundle}"], ["list", "--json", f"pem:{bundle}"], ["diff", f"pem:{bundle}", f"dir:{tmp_path}"],
                ["status"], ["--help"], ["sync", f"pem:{bundle}", f"pem:{copy}"]]
    read_only = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd, says in ((None, "closed"), (read_only, "open for reading only")):
            for argv in commands:
                result = run_with_stdout(argv, fd, env)
                assert result.returncode == 2, (argv, fd, result.stderr)
                assert result.stderr.startswith("storesync: cannot write the output to standard output"), \
                    (argv, fd, result.stderr)
                assert says in result.stderr and result.stderr.count("\n") == 1, (argv, fd, result.stderr)
            if fd is None:
                assert not copy.exists()  # closed from the start: nothing was done
    finally:
        os.close(read_only)


def test_rollback_list_to_unwritable_output_is_the_output_s_fault(tmp_path, pki):
    """`rollback --list` only lists: output it cannot write is said as `list` says it, not as a
    store that could not be put back."""
    bundle, copy = tmp_path / "a.pem", tmp_path / "copy.pem"
    bundle.write_bytes(pki.ca("Rollback List Root").pem)
    env = {**os.environ, "COLUMNS": "100"}
    assert subprocess.run([sys.executable, "-m", "storesync", "sync", f"pem:{bundle}", f"pem:{copy}"],
                          capture_output=True, env=env).returncode == 0
    written = copy.read_bytes()
    full, read_only = os.open("/dev/full", os.O_WRONLY), os.open(os.devnull, os.O_RDONLY)
    try:
        for fd, says in ((full, "(No space left on device)"), (read_only, "open for reading only")):
            for argv in (["rollback", "--list", f"pem:{copy}"], ["rollback", "--list", "--json", f"pem:{copy}"]):
                result = run_with_stdout(argv, fd, env)
                assert result.returncode == 2, (argv, result.stderr)
                assert result.stderr.startswith("storesync: cannot write the output to standard output"), result.stderr
                assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    finally:
        os.close(full)
        os.close(read_only)
    assert copy.read_bytes() == written

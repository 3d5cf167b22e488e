"""`storesync daemon`: a store a selector finds is watched only once its reconcile has read (and
written) it. A change made to it in between sent no event, so the daemon must look once more
after the new watch exists, as it does for a discovery root."""

from __future__ import annotations

import os
import sys

from test_daemon import Daemon, daemons  # noqa: F401 - daemons: fixture
from test_reapply import appears, machine, profile  # noqa: F401 - machine: fixture

# The daemon, with the first reconcile of a profile made to wait, once, after it read and wrote
# its stores and before their new watches: whatever the test does then lands in that window
# (the one a busy machine, or an @all reading many stores, opens by chance).
PAUSED_AFTER_READ = """
import os, time
import storesync.daemon as d
paused, done = os.environ["PAUSED"], os.environ["DONE"]
plain = d.Daemon._named
def named(self, track, result):
    if not os.path.exists(paused):
        open(paused, "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.02)
    return plain(self, track, result)
d.Daemon._named = named
from storesync.cli import main
main()
"""


def test_store_changed_between_its_first_read_and_its_watch_is_reconciled(tmp_path, machine, root, daemons):
    """Debian's anchor folder, found by @system: the start's reconcile puts the root in, then
    (before the folder is watched) a package's clean-up takes it out again. The daemon puts it
    back at once, not at the periodic rescan 10 minutes on."""
    (machine / "etc").mkdir()
    (machine / "etc/os-release").write_text("ID=debian\n")
    anchors = machine / "usr/local/share/ca-certificates"
    anchors.mkdir(parents=True)
    config = profile(tmp_path, root.write(tmp_path / "corp.pem"), "@system")
    paused, done = tmp_path / "paused", tmp_path / "done"
    env = {**os.environ, "PAUSED": str(paused), "DONE": str(done)}
    daemon = Daemon(tmp_path, config, env=env, argv=[sys.executable, "-c", PAUSED_AFTER_READ])
    daemons.append(daemon)
    appears(paused.exists, "the first reconcile", daemon)
    written = list(anchors.iterdir())
    assert len(written) == 1, written  # the root, put in by the start's reconcile
    written[0].unlink()
    done.touch()
    appears(lambda: len(list(anchors.iterdir())) == 1, "the root taken out before the watch", daemon)
    assert daemon.stop() == 0

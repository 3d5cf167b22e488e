"""`storesync daemon`: watch the config's stores and reconcile each profile when one changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from storesync.cli.common import NO_CONFIG, fail, use_root
from storesync.cli.options import CONFIG, PASSWORD_FILE, PYTHON, ROOT, STATE_DIR
from storesync.model import StoreError


def declare(app) -> None:
    app.command("daemon")(daemon)


def daemon(
    config: Optional[Path] = CONFIG,
    state_dir: Optional[Path] = STATE_DIR,
    once: bool = typer.Option(False, "--once", help="Reconcile every profile once and exit with the worst exit code (for cron and tests)."),
    log_format: str = typer.Option("text", "--log-format", help="text (journald-friendly lines) or json (one object per line)."),
    password_file: Optional[Path] = PASSWORD_FILE,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log reconciles that changed nothing."),
    root: Optional[Path] = ROOT,
    metrics: Optional[str] = typer.Option(None, "--metrics", metavar="HOST:PORT",
                                          help="Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9108); not with --once."),
    python: list[str] = PYTHON,
    java_home: list[str] = typer.Option(None, "--java-home", help="A JDK, or a folder of JDKs, whose cacerts `@java` and `@all` include; watched for JDKs that appear (repeatable)."),
) -> None:
    """Watch the stores of the config's profiles and reconcile each profile when one of its stores changes.

    SIGHUP reloads the config; SIGTERM or SIGINT finish the reconcile in progress and exit 0.

    Under systemd (Type=notify) it reports readiness, status and watchdog pings.

    A profile naming selectors (`targets = ["@nss", "@java"]`) is applied to every store they find
    and, within about a second, to every store that appears later (a JDK unpacked under
    /usr/lib/jvm, a new Firefox profile, a new ~/.pki/nssdb).

    The last reconcile of every profile is kept in STATE_DIR/status.json (`storesync status`);
    --metrics serves the same as Prometheus metrics."""
    from storesync import daemon as service
    from storesync.config import load_config
    from storesync import state

    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, not {log_format!r}")
    if metrics is not None and once:  # nothing would serve them: a run of --once ends at once
        fail("--metrics and --once do not go together: metrics are served by a running daemon; leave one out")
    state.set_state_dir(state_dir)
    use_root(root)  # the selectors of the profiles find the stores under it
    try:
        loaded = load_config(config)
    except StoreError as exc:
        fail(str(exc))
    if loaded.path is None:
        fail(NO_CONFIG)
    if not loaded.profiles:
        fail(f"config {loaded.path}: no profiles to watch ([profile.NAME] tables)")
    defaults = {"password-file": str(password_file)} if password_file else {}
    # how its hints name `storesync sync`: with the config it runs (found maybe by $STORESYNC_CONFIG, which
    # another shell lacks) and the options it was given, so a hint runs as printed
    import shlex
    from storesync import fsio

    given = {"--config": loaded.path, "--root": fsio.machine_root(), "--state-dir": state_dir,
             "--password-file": password_file}
    sync = " ".join(["storesync sync", *(f"{flag} {shlex.quote(str(Path(value).absolute()))}"
                                         for flag, value in given.items() if value)])
    service_ = service.Daemon(loaded, service.Log(log_format, verbose), defaults, python or (), java_home or (), sync)
    if metrics is not None:
        from storesync import metrics as exporter

        try:
            exporter.serve(metrics, service_)
        except ValueError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot serve metrics on {metrics} ({exc.strerror or exc}); give --metrics a free HOST:PORT")
    sys.exit(service_.once() if once else service_.serve())

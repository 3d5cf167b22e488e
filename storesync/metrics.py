"""`storesync daemon --metrics HOST:PORT`: Prometheus metrics of the daemon's profiles.

Nothing is counted twice: a collector reads, at each scrape, what the daemon already keeps for
its status file (Track.status, Track.errors, Track.runs), so `/metrics` and `status --json` say
the same. Its own registry (not prometheus_client's global one) and its own server thread;
prometheus_client is imported only when the flag is given (the daemon's start-up stays lean).
"""

from __future__ import annotations

import errno
import socket
import time
from datetime import datetime

PREFIX = "storesync_"


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:9108`, `[::1]:9108`, `:9108` (host "": every address) -> (host, port); ValueError else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics takes HOST:PORT (e.g. 127.0.0.1:9108), not {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, int(port)


def serve(address: str, daemon) -> object:
    """Start serving the daemon's metrics on `address` from a thread; the server (for
    shutdown()). Raises ValueError for a malformed address, OSError when it cannot bind."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, port = parse_address(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(daemon))
    if not host and socket.has_ipv6:
        try:
            return dual_stack(port, registry)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise  # a port in use is the user's to hear of
    server, _thread = start_http_server(port, addr=host or "0.0.0.0", registry=registry)  # no IPv6 here
    return server


def dual_stack(port: int, registry) -> object:
    """Serve on every address, IPv6 and IPv4, as most servers take an empty host: one IPv6
    socket on `::` that takes IPv4 too (IPV6_V6ONLY off, whatever the system's default)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - no line per scrape on the daemon's log
            pass

    server = make_server("::", port, make_wsgi_app(registry), Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def unix(value) -> float | None:
    """A time as the status file holds it (ISO 8601, `Z` for UTC) or as unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class Collector:
    """One scrape: every profile's last reconcile, as the daemon recorded it."""

    def __init__(self, daemon):
        self.daemon = daemon

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def gauge(name, text, labels):
            return GaugeMetricFamily(PREFIX + name, text, labels=labels)

        runs = CounterMetricFamily(PREFIX + "runs", "Reconciles of the profile since the daemon started.",
                                   labels=["profile"])
        errors = CounterMetricFamily(PREFIX + "errors", "Reconciles that met a problem, by kind (unreadable, "
                                     "held-back, error, crash, stale).", labels=["profile", "kind"])
        exit_code = gauge("last_exit_code", "Exit code of the profile's last reconcile (0 ok, 2 error, "
                          "3 held back).", ["profile"])
        success = gauge("last_success_timestamp_seconds", "When the profile's last reconcile that exited 0 "
                        "ended (unix seconds).", ["profile"])
        anchors = gauge("store_anchors", "Certificates the store trusts after the last reconcile.",
                        ["profile", "store"])
        drifted = gauge("store_drift", "Entries changed by other hands since storesync last wrote the store "
                        "(after the last reconcile).", ["profile", "store", "category"])
        version = gauge("policy_version", "Version of the signed policy applied (a tuf: source).", ["profile"])
        stale = gauge("source_stale", "1 when the source could not be verified afresh and its last good "
                      "copy is used.", ["profile"])
        age = gauge("source_verified_age_seconds", "Seconds since the source was last verified.", ["profile"])
        moment = time.time()
        for name, track in list(self.daemon.tracks.items()):
            status = track.status or {}
            runs.add_metric([name], track.runs)
            for kind, count in sorted(track.errors.items()):
                errors.add_metric([name, kind], count)
            if status.get("exit_code") is not None:
                exit_code.add_metric([name], status["exit_code"])
            if track.last_success is not None:
                success.add_metric([name], track.last_success)
            for spec, facts in (status.get("stores") or {}).items():
                anchors.add_metric([name, spec], facts.get("anchors", 0))
                for category, count in sorted((facts.get("drift") or {}).items()):
                    drifted.add_metric([name, spec, category], count)
            source = status.get("source")
            if isinstance(source, dict):
                if isinstance(source.get("applied"), int):
                    version.add_metric([name], source["applied"])
                stale.add_metric([name], 1 if source.get("stale") else 0)
                verified = unix(source.get("verified_at"))
                if verified is not None:
                    age.add_metric([name], max(0.0, moment - verified))
        yield from (runs, errors, exit_code, success, anchors, drifted, version, stale, age)

"""`tuf` (read-only): a trust policy published with `storesync publish`, read over HTTP(S) with
python-tuf's ngclient, which checks signatures, versions (rollback) and expiry (freeze).

    tuf:https://trust.example.com/repo/corp?root=/etc/storesync/root.json
    tuf:https://trust.example.com/repo?root=/etc/storesync/root.json&name=corp

The URL is the repository's (where `N.root.json` and `timestamp.json` are) followed by the
target's name, or the repository's alone with `name=`. `root=` is the repository's first root
metadata, trusted until a first policy is verified; after that the root ngclient keeps (following rotations
signed by the previous root) is. `timeout=` (seconds, default 10) bounds each request.

Keep last good: the metadata and the last verified policy are kept in the state dir (tuf/,
one folder per URL and name). When a refresh fails (server unreachable or answering errors,
metadata expired, rolled back, tampered or signed by unknown keys) the last verified policy is
read, nothing is lost, and `freshness` says the source is stale and why; with no verified policy
ever, reading fails. Importing this module does not import tuf: reading does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from storesync.fsio import atomic_write
from storesync.model import Capabilities, StoreError, TrustSet
from storesync.stores import Store, StoreSpec, Values, number

DEFAULT_TIMEOUT = 10


class TufSpec(StoreSpec):
    """A spec whose "path" is a URL: shown and keyed as typed (a Path folds `https://` to `https:/`)."""

    __slots__ = ()

    @property
    def url(self) -> str:
        return re.sub(r"^([a-z][a-z0-9+.-]*):/(?!/)", r"\1://", str(self.path))

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.url}#{self.options.get('name', '')}"

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}:{self.url}" + (f"?{query}" if query else "")


def _as_tuf_spec(spec: StoreSpec | str) -> TufSpec:
    if isinstance(spec, str):
        from storesync.stores import parse_spec

        spec = parse_spec(spec)
    return spec if isinstance(spec, TufSpec) else TufSpec(spec.kind, spec.path, spec.options, spec.defaults)


def cache_dir(spec: StoreSpec | str) -> Path:
    """Where the metadata, the last verified policy and its freshness of a `tuf:` source live."""
    from storesync.state import state_dir

    spec = _as_tuf_spec(spec)
    base, name = split_url(spec)
    text = f"{base}#{name}"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("_")
    return Path(state_dir()) / "tuf" / f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def split_url(spec: TufSpec) -> tuple[str, str]:
    """(the repository's base URL, ending in /; the target's name)."""
    url = spec.url
    name = spec.options.get("name", spec.defaults.get("name"))  # the spec's, or the profile's table
    if name:
        return url.rstrip("/") + "/", name
    from urllib.parse import urlsplit

    if not urlsplit(url).path.strip("/"):  # the server's root alone names no target (its host is no name)
        return url.rstrip("/") + "/", ""
    base, _, name = url.rstrip("/").rpartition("/")
    return base + "/", name


def freshness(spec: StoreSpec | str) -> dict | None:
    """What the last read of a `tuf:` source found, without the network (None: never read here):
    {"version", "verified_at", "stale", "reason", "url"}."""
    try:
        return json.loads((cache_dir(spec) / "freshness.json").read_text())
    except (OSError, ValueError):
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def stale_text(fresh: dict) -> str:
    """The one line that says a `tuf:` source is stale, why, and what is used instead."""
    return (f"{fresh.get('url')}: stale: {fresh.get('reason')}; using the last verified policy (version "
            f"{fresh.get('version')}, verified {fresh.get('verified_at')}), nothing removed")


class TufStore(Store):
    kind = "tuf"
    options = ("root", "name", "timeout")
    values = {"timeout": Values(test=lambda v: 0 < number(v) < float("inf"), what="a number of seconds above 0")}
    reader = "openssl"

    def __init__(self, spec: StoreSpec):
        super().__init__(_as_tuf_spec(spec))
        self.freshness: dict | None = None  # filled by read()

    # the policy is a format=trusted bundle (purposes, distrust, labels), which only `storesync publish` writes
    capabilities = Capabilities(purposes=True, distrust=True, labels=True, lone_reject_trusts=True, writable=False)

    def exists(self) -> bool:
        return True  # reading says what is wrong when nothing can be read

    def watch_paths(self) -> list[Path]:
        return []  # polled (the daemon's `poll`), not watched

    def owns(self, path: str) -> bool:
        return False

    def snapshot(self) -> dict[str, bytes | None]:
        return {}

    def write(self, plan) -> None:
        raise self.error("is read-only (a policy published with `storesync publish`); publish a new policy instead")

    def error(self, what: str, path: Path | None = None) -> StoreError:
        return StoreError(f"tuf store {self.spec.url}: {what}")

    def read(self) -> TrustSet:
        return self._read(refresh=True)

    def read_cached(self) -> TrustSet:
        """The last verified policy and its freshness, without the network (`storesync status`)."""
        return self._read(refresh=False)

    def _read(self, refresh: bool) -> TrustSet:
        folder = cache_dir(self.spec)
        policy = folder / "policy.pem"
        base, name = split_url(self.spec)
        if not name:
            raise self.error("names no target: end the URL with the published name, or add &name=NAME")
        before = freshness(self.spec) or {}
        if not refresh:
            if not policy.exists():
                tried = f"; the last try: {before['reason']}" if before.get("reason") else ""
                raise self.error(f"has not been read on this machine yet (no verified policy in the state dir){tried}")
            self.freshness = before or None
            if before.get("stale"):
                self.warnings.append(stale_text(before))
            return self._parse(folder, policy)
        from storesync.state import lock

        try:
            with lock(f"tuf {folder.name}"):  # ngclient's cache is for one process at a time (daemon and CLI)
                version = self._refresh(folder, base, name, policy)
            self.freshness = {"version": version, "verified_at": _now_iso(), "stale": False, "reason": None,
                              "url": self.spec.url, "name": name}
        except _Failed as exc:
            self.freshness = {"version": before.get("version"), "verified_at": before.get("verified_at"),
                              "stale": True, "reason": str(exc), "url": self.spec.url, "name": name}
            if not policy.exists():
                self._keep_freshness(folder)  # status and metrics see a source never verified, and why
                raise self.error(f"{exc}; no verified policy was ever read from it, so nothing can be used "
                                 "(check the URL, the root= file and the server)") from None
            self.warnings.append(stale_text(self.freshness))
        self._keep_freshness(folder)
        return self._parse(folder, policy)

    def _keep_freshness(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(folder / "freshness.json", json.dumps(self.freshness).encode(), mode=0o644)
        except OSError:
            pass  # only the note for status and metrics is lost

    def _parse(self, folder: Path, policy: Path) -> TrustSet:
        from storesync.stores.pem import PemStore

        pem = PemStore(StoreSpec("pem", policy, {"format": "trusted"}))
        try:
            return pem.parse(policy.read_bytes())
        except StoreError as exc:
            raise self.error(f"its cached policy {policy} cannot be read ({exc}); delete {folder} to fetch it afresh") from None

    def _refresh(self, folder: Path, base: str, name: str, policy: Path) -> int:
        """A TUF refresh and, if the policy changed, its download; returns the targets version."""
        from tuf.api import exceptions
        from tuf.api.metadata import Metadata
        from tuf.ngclient import Updater
        from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

        if not re.match(r"https?://", base):  # ngclient would only say "failed to download"
            raise self.error("the URL must begin with https:// or http:// (a repository on this machine: serve its "
                             "folder, e.g. with python -m http.server)")
        metadata = folder / "metadata"
        timeout = float(self.option("timeout", str(DEFAULT_TIMEOUT)))
        bootstrap = None
        root = self.option("root")
        # until a policy is verified, the root= file is the trust anchor: a wrong file given first
        # is not kept once root= is corrected
        if not (metadata / "root.json").exists() or (root and not policy.exists()):
            if not root:
                raise self.error("needs root=FILE: the repository's 1.root.json, copied from the publisher")
            try:
                bootstrap = Path(os.path.expanduser(root)).read_bytes()
            except OSError as exc:
                raise self.error(f"cannot read its root= file {root} ({exc.strerror})") from None
            shutil.rmtree(metadata, ignore_errors=True)  # and the root versions a wrong anchor led to
        try:
            metadata.mkdir(parents=True, exist_ok=True, mode=0o700)
            fetcher = Urllib3Fetcher(socket_timeout=timeout, app_user_agent="storesync")
            if bootstrap is None and _unchanged(fetcher, base, metadata, name, policy):
                return Metadata.from_file(str(metadata / "targets.json")).signed.version
            try:
                updater = Updater(str(metadata), base, str(folder / "download"), base + "targets/", fetcher,
                                  bootstrap=bootstrap)
            except exceptions.RepositoryError as exc:  # the trust anchor itself is not root metadata
                where = f"its root= file {self.option('root')}" if bootstrap else f"the root kept in {metadata}"
                raise self.error(f"{where} is not valid TUF root metadata ({exc}); give it the repository's "
                                 "1.root.json, as copied from the publisher") from None
            updater.refresh()
            info = updater.get_targetinfo(name)
            if info is None:
                raise _Failed(f"the repository publishes no policy named {name!r}")
            if updater.find_cached_target(info, str(policy)) is None:
                fresh = updater.download_target(info, str(folder / "policy.pem.new"))
                os.replace(fresh, policy)
            return Metadata.from_file(str(metadata / "targets.json")).signed.version
        except (_Failed, StoreError):  # already one sentence (a bad root= is no unreachable server)
            raise
        except exceptions.ExpiredMetadataError as exc:
            raise _Failed(f"its metadata has expired ({exc}): the publisher stopped refreshing it, or the server "
                          "replays old metadata (freeze)") from None
        except exceptions.BadVersionNumberError as exc:
            raise _Failed(f"the server offers older metadata than already seen ({exc}): rollback refused") from None
        except exceptions.UnsignedMetadataError as exc:
            raise _Failed(f"metadata not signed by the keys its root names ({exc}): refused") from None
        except exceptions.LengthOrHashMismatchError as exc:
            raise _Failed(f"downloaded bytes do not match the signed metadata ({exc}): tampered, refused") from None
        except exceptions.RepositoryError as exc:
            raise _Failed(f"the repository's metadata does not verify ({type(exc).__name__}: {exc})") from None
        except exceptions.SlowRetrievalError as exc:
            refused = getattr(exc.__cause__, "reason", None)  # urllib3 counts a refused connection as a timeout
            if refused is not None and type(refused).__name__ == "NewConnectionError":
                said = re.sub(r"<[^>]*>:?\s*", "", str(refused))
                raise _Failed(f"the server is unreachable ({said})") from None
            raise _Failed(f"the server did not answer within {timeout:g} s") from None
        except exceptions.DownloadHTTPError as exc:
            raise _Failed(f"the server answered HTTP {exc.status_code}") from None
        except exceptions.DownloadError as exc:
            raise _Failed(f"download failed ({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise _Failed(f"cannot keep its metadata in {folder} ({exc.strerror or exc})") from None
        except Exception as exc:  # noqa: BLE001 - urllib3's connection errors and the like: the server is not there
            reason = getattr(exc, "reason", None) or exc
            said = re.sub(r"<[^>]*>:?\s*", "", str(reason))  # no object addresses: the same failure reads the same
            raise _Failed(f"the server is unreachable ({type(reason).__name__}: {said})") from None
        finally:
            shutil.rmtree(folder / "download", ignore_errors=True)


def _unchanged(fetcher, base: str, metadata: Path, name: str, policy: Path) -> bool:
    """An unchanged poll in one request: the served timestamp is byte for byte the one verified
    last time, and nothing verified since has expired, so there is nothing new to verify. It
    accepts no new metadata: anything else (a new timestamp, a rotation published with it, a
    replayed one past its expiry) takes the whole TUF refresh, root first."""
    from tuf.api.metadata import Metadata

    try:
        kept = (metadata / "timestamp.json").read_bytes()
        served = fetcher.download_bytes(base + "timestamp.json", len(kept) + 1)
    except OSError:
        return False
    except Exception:  # noqa: BLE001 - a different length, an HTTP error...: the whole refresh says why
        return False
    if served != kept:
        return False
    try:
        roles = {role: Metadata.from_file(str(metadata / f"{role}.json")) for role in ("root", "timestamp", "snapshot", "targets")}
        if any(md.signed.is_expired() for md in roles.values()):
            return False
        info = roles["targets"].signed.targets.get(name)
        if info is None:
            return False
        info.verify_length_and_hashes(policy.read_bytes())  # the cached policy is still the signed one
    except Exception:  # noqa: BLE001 - anything odd in the cache: the whole refresh
        return False
    return True


class _Failed(Exception):
    """A refresh that did not give a verified policy, and why (one sentence)."""

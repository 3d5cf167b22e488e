"""`storesync publish`: a TUF repository of trust policies, for a fleet of agents (`tuf:` stores).

Built with python-tuf's Metadata API and securesystemslib's CryptoSigner (ed25519). The
repository is a folder any static web server can serve, laid out as python-tuf's ngclient reads
it with consistent snapshots: `N.root.json`, `timestamp.json`, `N.snapshot.json`,
`N.targets.json` and `targets/SHA256.NAME`. A target is a policy in the `pem:?format=trusted`
form (purposes, distrust and labels survive); the targets version is the policy serial.

Private keys live in the keys folder (PEM, mode 0600), named `ROLE-KEYID.pem`, never in the
repository. The keys folder of a repository is remembered in the state dir by `publish init`.
Everything here imports tuf lazily: only `storesync publish` pays for it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from storesync import state
from storesync.fsio import atomic_write
from storesync.model import MAX_DAYS, StoreError

ROLES = ("root", "targets", "snapshot", "timestamp")
ROOT_EXPIRES = timedelta(days=365)
ROOT_RENEW = timedelta(days=30)  # refresh says so when the root expires within this
DEFAULT_EXPIRES = "7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class PublishError(StoreError):
    """One sentence: what is wrong with the repository, its keys or the command."""


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `12h`, `7d`, `2w`: at most MAX_DAYS (a date further ahead cannot be written)."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*([smhdw])\s*", text or "")  # more digits: out of range anyway
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_DAYS * _UNITS["d"]:
        raise PublishError(f"--expires takes a duration from 1s to {MAX_DAYS}d, such as 30s, 12h or 7d, not {text!r}")
    return timedelta(seconds=seconds)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# --- keys ------------------------------------------------------------------------------------


def _remembered(repo: Path) -> Path:
    return Path(state.state_dir()) / "publish" / (re.sub(r"[^A-Za-z0-9._-]+", "_", str(repo.absolute()))[-80:] + ".json")


def _off_the_web(repo: Path, keys: Path) -> Path:
    """The keys folder, refused when it is in the served repository (a private key would be published)."""
    inside, outside = repo.expanduser().resolve(), keys.expanduser().resolve()
    if outside == inside or inside in outside.parents:
        raise PublishError(f"keys {keys}: inside repository {repo}, whose every file is served; "
                           "pass a --keys folder outside it")
    return keys.expanduser()


def keys_dir(repo: Path, keys: Path | None) -> Path:
    """--keys, else the folder `publish init` used for this repository."""
    _no_repo(repo)  # a typo in REPO is said as such, not as keys unknown
    if keys is not None:
        found = _off_the_web(repo, keys)
    else:
        try:
            found = Path(json.loads(_remembered(repo).read_text())["keys"])
        except (OSError, ValueError, KeyError, TypeError):
            raise PublishError(f"repository {repo}: which keys sign it is not known here; pass --keys DIR "
                               "(the folder `publish init` wrote them to)") from None
    if not found.is_dir():  # e.g. kept offline, and not mounted now
        raise PublishError(f"keys {found}: no such folder; mount or copy the keys folder of repository {repo} "
                           "and pass it with --keys")
    return found


def _new_signer(keys: Path, role: str):
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(keys / f"{role}-{signer.public_key.keyid}.pem", signer.private_bytes, mode=0o600)
    return signer


def _signers(keys: Path, root, role: str) -> list:
    """The signers of `role` whose private keys are in the keys folder (at least its threshold)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    found = []
    for keyid in root.roles[role].keyids:
        for path in keys.glob(f"*-{keyid}.pem"):
            try:
                private = load_pem_private_key(path.read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise PublishError(f"key {path}: cannot read it ({exc}); restore it from the backup of the keys") from None
            found.append(CryptoSigner(private, root.keys[keyid]))
            break
    if len(found) < root.roles[role].threshold:
        raise PublishError(f"keys {keys}: holds {len(found)} of the {root.roles[role].threshold} {role} keys this "
                           f"repository needs; pass the keys folder of this repository with --keys")
    return found


# --- the repository --------------------------------------------------------------------------


class Repo:
    """The newest metadata of a repository folder, and how to sign and write new versions."""

    def __init__(self, path: Path, keys: Path):
        from tuf.api.metadata import Metadata

        self.path, self.keys = path, keys
        _no_repo(path)
        try:  # the newest version of each, by file name: what the publisher itself wrote last
            self.root = Metadata.from_file(str(_newest(path, "root")))
            self.timestamp = Metadata.from_file(str(path / "timestamp.json"))
            self.snapshot = Metadata.from_file(str(_newest(path, "snapshot")))
            self.targets = Metadata.from_file(str(_newest(path, "targets")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(f"repository {path}: its metadata cannot be read ({type(exc).__name__}: {exc}); "
                               "restore the folder from its backup") from None
        self._verify()

    def _verify(self) -> None:
        """The metadata found is what this publisher signed before, checked as an agent checks it
        (each root by the one before it, from 1.root.json, the one agents pin; the other roles by
        the newest root; the versions each names): whoever may write the served folder must not
        get a policy signed by the next `publish` or `refresh`."""
        from tuf.api.exceptions import RepositoryError
        from tuf.api.metadata import Metadata

        try:
            trusted = Metadata.from_file(str(self.path / "1.root.json"))
            trusted.verify_delegate("root", trusted)
            for version in range(2, self.root.signed.version + 1):
                newer = Metadata.from_file(str(self.path / f"{version}.root.json"))
                trusted.verify_delegate("root", newer)
                newer.verify_delegate("root", newer)
                trusted = newer
            if trusted.to_bytes() != self.root.to_bytes():
                raise RepositoryError("the newest root is not the end of the chain of roots")
            for role in ("timestamp", "snapshot", "targets"):
                trusted.verify_delegate(role, getattr(self, role))
            if self.timestamp.signed.snapshot_meta.version != self.snapshot.signed.version or \
                    self.snapshot.signed.meta["targets.json"].version != self.targets.signed.version:
                raise RepositoryError("timestamp, snapshot and targets name other versions of each other")
        except (OSError, ValueError, KeyError, TypeError, RepositoryError) as exc:
            raise PublishError(f"repository {self.path}: its metadata does not verify ({type(exc).__name__}: {exc}); "
                               "nothing was signed: restore the folder from its backup") from None

    def sign(self, md, role: str, signers: list | None = None) -> None:
        md.signatures.clear()
        for signer in signers if signers is not None else _signers(self.keys, self.root.signed, role):
            md.sign(signer, append=True)

    def write(self, md, name: str) -> None:
        from tuf.api.serialization.json import JSONSerializer

        atomic_write(self.path / name, md.to_bytes(JSONSerializer(compact=False)), mode=0o644)

    def bump(self, md, expires: timedelta) -> None:
        md.signed.version += 1
        md.signed.expires = _now() + expires

    def publish_targets(self, expires: timedelta) -> None:
        """targets (already changed), then snapshot and timestamp: new versions, signed, written
        in the order a client reads them backwards (timestamp last), so a reader never sees a
        timestamp naming a snapshot that is not there yet."""
        self.bump(self.targets, expires)
        self.sign(self.targets, "targets")
        self.write(self.targets, f"{self.targets.signed.version}.targets.json")
        self.snapshot.signed.meta["targets.json"].version = self.targets.signed.version
        self.publish_snapshot(expires)

    def publish_snapshot(self, expires: timedelta) -> None:
        self.bump(self.snapshot, expires)
        self.sign(self.snapshot, "snapshot")
        self.write(self.snapshot, f"{self.snapshot.signed.version}.snapshot.json")
        self.timestamp.signed.snapshot_meta.version = self.snapshot.signed.version
        self.publish_timestamp(expires)

    def publish_timestamp(self, expires: timedelta) -> None:
        self.bump(self.timestamp, expires)
        self.sign(self.timestamp, "timestamp")
        self.write(self.timestamp, "timestamp.json")

    def target_bytes(self, name: str) -> bytes | None:
        """The policy published as `name` now (None: none yet)."""
        info = self.targets.signed.targets.get(name)
        if info is None:
            return None
        try:
            data = (self.path / "targets" / f"{info.hashes['sha256']}.{name}").read_bytes()
        except (OSError, KeyError):
            raise PublishError(f"repository {self.path}: the file of target {name} is missing from targets/; "
                               "restore the folder from its backup") from None
        from tuf.api.exceptions import LengthOrHashMismatchError

        try:
            info.verify_length_and_hashes(data)  # before anything reads it
        except LengthOrHashMismatchError:
            raise PublishError(f"repository {self.path}: the file of target {name} is not the one its signed "
                               "metadata names; nothing was published: restore the folder from its backup") from None
        return data


def _no_repo(path: Path) -> None:
    if not _newest(path, "root"):
        raise PublishError(f"repository {path}: no N.root.json in it; create it with `storesync publish init {path}`")


def _newest(repo: Path, role: str) -> Path | None:
    versions = [(int(p.name.split(".")[0]), p) for p in repo.glob(f"*.{role}.json") if p.name.split(".")[0].isdigit()]
    return max(versions)[1] if versions else None


def init(repo: Path, keys: Path, threshold: int = 1, expires: timedelta = timedelta(days=7)) -> dict:
    """A new repository: root, targets, snapshot and timestamp, each version 1, with new keys."""
    from tuf.api.metadata import Metadata, MetaFile, Role, Root, Snapshot, Targets, Timestamp

    if threshold < 1:
        raise PublishError(f"--threshold must be 1 or more, not {threshold}")
    _off_the_web(repo, keys)
    if repo.exists() and any(repo.glob("*.root.json")):
        raise PublishError(f"repository {repo}: already initialised (it holds root metadata); "
                           "use `storesync publish rotate` to change its keys")
    for folder in (repo, repo / "targets"):  # served: readable by the web server's user, whatever the umask
        if not folder.is_dir():
            folder.mkdir(parents=True)
            folder.chmod(0o755)
    root = Root(expires=_now() + ROOT_EXPIRES, consistent_snapshot=True)
    signers = {}
    for role in ROLES:
        count = threshold if role in ("root", "targets") else 1
        signers[role] = [_new_signer(keys, role) for _ in range(count)]
        root.roles[role] = Role([], count)
        for signer in signers[role]:
            root.add_key(signer.public_key, role)
    now = _now()
    mds = {
        "root": Metadata(root),
        "targets": Metadata(Targets(expires=now + expires)),
        "snapshot": Metadata(Snapshot(expires=now + expires, meta={"targets.json": MetaFile(1)})),
        "timestamp": Metadata(Timestamp(expires=now + expires, snapshot_meta=MetaFile(1))),
    }
    for role, md in mds.items():
        md.signatures.clear()
        for signer in signers[role]:
            md.sign(signer, append=True)
    from tuf.api.serialization.json import JSONSerializer

    serializer = JSONSerializer(compact=False)
    for role, name in (("root", "1.root.json"), ("targets", "1.targets.json"), ("snapshot", "1.snapshot.json"),
                       ("timestamp", "timestamp.json")):
        atomic_write(repo / name, mds[role].to_bytes(serializer), mode=0o644)
    atomic_write(_remembered(repo), json.dumps({"repo": str(repo.absolute()), "keys": str(keys.absolute())}).encode(),
                 mode=0o600)
    return {"repo": str(repo), "keys": str(keys), "root": str(repo / "1.root.json"), "threshold": threshold}


def publish(repo: Path, keys: Path, name: str, source: str, expires: timedelta, force: bool = False,
            max_removal_share: float = 0.10) -> dict:
    """Publish the trust of store `source` as target `name`; refused (PublishError) when the guards
    hold it back, unless `force`. Returns what was published, and what a guard said."""
    from tuf.api.metadata import TargetFile

    from storesync.engine.plan import lift, make_plan
    from storesync.engine.policy import removal_guard
    from storesync.model import TrustSet
    from storesync.stores import open_store, read_store
    from storesync.stores.pem import _TRUSTED, PemStore, render_entries

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise PublishError(f"target name {name!r}: use letters, digits, dot, dash and underscore (it is a file name "
                           "and the last part of the agents' URL)")
    published = Repo(repo, keys)
    store = open_store(source)
    if not store.exists():
        raise store.error(store.missing())
    wanted = lift(read_store(store), store.capabilities, store.purpose)
    data = render_entries(wanted.values(), trusted=True)
    before_bytes = published.target_bytes(name)
    before = PemStore(_spec_for(repo / "targets" / name))  # the published policy, read as agents read it
    current = before.parse(before_bytes) if before_bytes is not None else TrustSet()
    if before_bytes == data:
        return {"name": name, "version": published.targets.signed.version, "changed": False,
                "certificates": len(wanted), "held_back": None}
    plan = make_plan(wanted, current, _TRUSTED, store=f"{repo}:{name}")
    held = None
    if not wanted:
        held = (f"{source} is empty; an empty policy would empty every agent's stores (agents refuse it too); "
                "publish it with --force if that is meant")
    elif before_bytes is not None:
        why = removal_guard(plan, max_removal_share)
        if why:
            held = (f"{source}: compared with the published version {published.targets.signed.version}, it {why}; "
                    "publish it with --force if that is intended")
    if held and not force:
        return {"name": name, "version": published.targets.signed.version, "changed": False,
                "certificates": len(wanted), "held_back": held, "plan": plan}
    digest = _sha256(data)
    atomic_write(repo / "targets" / f"{digest}.{name}", data, mode=0o644)
    published.targets.signed.targets[name] = TargetFile.from_data(name, data, ["sha256"])
    published.publish_targets(expires)
    return {"name": name, "version": published.targets.signed.version, "changed": True,
            "certificates": len(wanted), "held_back": None, "forced": held, "plan": plan}


def refresh(repo: Path, keys: Path, expires: timedelta) -> dict:
    """New snapshot and timestamp versions with a new expiry (targets too, if it expires sooner)."""
    published = Repo(repo, keys)
    if published.targets.signed.expires < _now() + expires / 2:
        published.publish_targets(expires)
    else:
        published.publish_snapshot(expires)
    root_expires = published.root.signed.expires
    note = None
    if root_expires < _now() + ROOT_RENEW:  # refresh cannot renew it: root keys sign root, and only rotate uses them
        note = (f"repository {repo}: its root metadata expires on {root_expires:%Y-%m-%d %H:%M} UTC and every agent "
                f"then refuses it; renew it with `storesync publish rotate {repo} --role root`")
    return {"timestamp": published.timestamp.signed.version, "expires": published.timestamp.signed.expires.isoformat(),
            "root_expires": root_expires.isoformat(), "note": note}


def rotate(repo: Path, keys: Path, role: str, expires: timedelta) -> dict:
    """New keys for `role` (as many as its threshold), in a new root version signed by the old
    root keys (and, for root, by the new ones too); the role's metadata is signed again."""
    if role not in ROLES:
        raise PublishError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    published = Repo(repo, keys)
    root = published.root.signed
    old_root_signers = _signers(keys, root, "root")
    threshold = root.roles[role].threshold
    retired = list(root.roles[role].keyids)
    for keyid in retired:
        root.revoke_key(keyid, role)
    new = [_new_signer(keys, role) for _ in range(threshold)]
    for signer in new:
        root.add_key(signer.public_key, role)
    root.version += 1
    root.expires = _now() + ROOT_EXPIRES
    published.sign(published.root, "root", old_root_signers + (new if role == "root" else []))
    published.write(published.root, f"{root.version}.root.json")
    for keyid in retired:  # kept (offline backups may want them), apart from the keys in use
        for path in keys.glob(f"{role}-{keyid}.pem"):
            (keys / "retired").mkdir(exist_ok=True, mode=0o700)
            os.replace(path, keys / "retired" / path.name)
    if role == "targets":
        published.publish_targets(expires)
    elif role == "snapshot":
        published.publish_snapshot(expires)
    else:  # timestamp; and for root, a new timestamp makes agents look for the new root now
        published.publish_timestamp(expires)
    return {"role": role, "root": root.version, "keys": [s.public_key.keyid for s in new]}


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _spec_for(path: Path):
    from storesync.stores import StoreSpec

    return StoreSpec("pem", path, {"format": "trusted"})

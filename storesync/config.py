"""The config file: named profiles of stores.

    [profile.web]
    mode = "mirror"                                   # one source, many targets ("add": never remove)
    source = "pem:/etc/ssl/certs/ca-certificates.crt"
    targets = ["nss:/etc/pki/nssdb", { spec = "sst:/srv/export/roots.sst", purpose = "any" }]

    [profile.desktop]
    mode = "merge"                                    # N-way: a change in any store reaches all
    stores = ["pem:/usr/local/share/ca-certificates/corp.crt", "nss:~/.pki/nssdb"]

    [profile.corp]
    mode = "add"                                      # "remove": the source's certificates leave the targets
    source = "/etc/corp/root.pem"
    targets = ["@nss", "@java", "@certifi"]           # selectors: the stores found at each run
    python = ["/opt/app/venv"]                        # where @certifi looks

A store is a spec string, or a table with `spec` and store options (`password-file`,
`links`, `format`, `purpose`, `role`, ...). Profile keys: `purposes` (keep only anchors for
these), `only` (keep only these certificates: fingerprints or label globs, as `sync --only`),
`ca_only` (default true), `drop_expired` (default false), `max_removal_share`
(default 0.10), `allow_escalation` (default false), `allow_empty` (default false), `debounce_ms` and `rescan_s` (daemon),
`poll` (daemon: seconds between reads of a `tuf:` source, default 300, jittered by 10%).

A store's `on-change` (an argv list, no shell) runs after a run changed that store, within
`on-change-timeout` seconds (default 60); storesync.hooks runs it.
"""

from __future__ import annotations

import os
import re

from storesync.fsio import absolute, spelled
from storesync.model import PURPOSES, Record, StoreError, purpose_from_oid, purpose_problem

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from storesync.stores import StoreSpec

MODES = ("mirror", "add", "remove", "merge")
PROFILE_KEYS = {
    "mode", "source", "targets", "stores", "purposes", "only", "ca_only", "drop_expired",
    "max_removal_share", "allow_escalation", "allow_empty", "allow-empty", "debounce_ms", "rescan_s",
    "poll", "python",
}
# Targets that name families of the stores found on the machine (storesync.discover resolves them)
SELECTORS = ("@system", "@nss", "@java", "@certifi", "@all")


class ConfigError(StoreError):
    """The config file is wrong; the message names the file and line."""


class StoreRef(Record):
    """A store as a profile names it: its spec text, and options the profile gives it."""

    __slots__ = ("spec", "options", "on_change", "timeout")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, spec: "str | StoreSpec", options: dict[str, str] | None = None,
                 on_change: list[str] | None = None, timeout: float | None = None):
        self.spec, self.options = spec, options or {}  # options: the store's, never the hook's
        self.on_change = on_change  # argv run after a run changed this store (no shell)
        self.timeout = timeout  # on-change-timeout (None: the default)

    @property
    def selector(self) -> bool:
        return isinstance(self.spec, str) and self.spec.startswith("@")

    @property
    def found(self) -> bool:
        """A store a selector found: its spec is the path found (a StoreSpec), never text."""
        return not isinstance(self.spec, str)


class Profile(Record):
    __slots__ = ("name", "mode", "stores", "purposes", "ca_only", "drop_expired", "max_removal_share",
                 "allow_escalation", "allow_empty", "debounce_ms", "rescan_s", "only", "poll", "python")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str, mode: str, stores: list[StoreRef], purposes: tuple[str, ...] = (),
                 ca_only: bool = True, drop_expired: bool = False, max_removal_share: float = 0.10,
                 allow_escalation: bool = False, debounce_ms: int = 250, rescan_s: int = 600, allow_empty: bool = False,
                 only: tuple[str, ...] = (), poll: float = 300, python: tuple[str, ...] = ()):
        self.name, self.mode = name, mode
        self.poll = poll  # daemon: seconds between reads of a source that cannot be watched (tuf:)
        self.stores = stores  # mirror: the source first, then the targets
        self.purposes, self.ca_only, self.drop_expired = purposes, ca_only, drop_expired
        self.max_removal_share, self.allow_escalation = max_removal_share, allow_escalation
        self.debounce_ms, self.rescan_s = debounce_ms, rescan_s
        self.allow_empty = allow_empty  # an empty source (merge: an emptied store) may empty the others
        self.only = only  # --only: fingerprints or label globs (engine.policy.selected)
        self.python = python  # Python environments whose certifi bundles @certifi names

    @property
    def source(self) -> StoreRef | None:
        return self.stores[0] if self.mode == "mirror" else None


class Config(Record):
    __slots__ = ("path", "profiles")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, path: str | None, profiles: dict[str, Profile]):
        self.path, self.profiles = path, profiles


def config_path(explicit: str | os.PathLike | None = None) -> str | None:
    """--config, else $STORESYNC_CONFIG, else the user's storesync.toml, else the system's (the
    file packaging/storesync.service reads, so root's commands and the daemon agree), else the one
    in the XDG site dir (/etc/xdg/storesync), where earlier versions looked."""
    if explicit:
        return spelled(os.path.expanduser(explicit))
    if os.environ.get("STORESYNC_CONFIG"):
        return spelled(os.path.expanduser(os.environ["STORESYNC_CONFIG"]))
    import platformdirs

    for directory in (platformdirs.user_config_dir("storesync"), "/etc/storesync",
                      platformdirs.site_config_dir("storesync")):
        candidate = os.path.join(directory, "storesync.toml")
        if os.path.exists(candidate):
            return candidate
    return None


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    path = config_path(explicit)
    if path is None:
        return Config(None, {})
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        if explicit or os.environ.get("STORESYNC_CONFIG"):
            raise ConfigError(f"config {path}: does not exist") from None
        return Config(None, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot read it ({exc})") from None
    return parse_config(text, path)


def parse_config(text: str, path: str | None = None) -> Config:
    import tomllib

    where = f"config {path}" if path else "config"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None

    def error(what: str, needle: str, profile: str | None = None) -> ConfigError:
        # tomllib keeps no positions: find the key, looking first inside the profile's own table
        start = 0
        if profile is not None:
            header = re.search(rf"^\s*\[\s*profile\.\"?{re.escape(profile)}\"?\s*\]", text, re.M)
            start = header.start() if header else 0
        match = re.search(rf"(?m)^\s*{re.escape(needle)}\b", text[start:]) or re.search(re.escape(needle), text[start:])
        line = f" line {text.count(chr(10), 0, start + match.start()) + 1}" if match else ""
        return ConfigError(f"{where}{line}: {what}")

    unknown = set(data) - {"profile"}
    if unknown:
        key = sorted(unknown)[0]
        raise error(f"unknown section or key {key!r} (profiles are [profile.NAME])", key)
    profiles = {}
    for name, table in data.get("profile", {}).items():
        if not isinstance(table, dict):
            raise error(f"profile {name!r} must be a table [profile.{name}]", name)
        profiles[name] = _profile(name, table, error)
    _one_writer_per_store(profiles, error)
    return Config(path, profiles)


def store_key(spec: "StoreSpec | str") -> str:
    """A store's identity across spellings: its real path (a JDK's cacerts is often a link)."""
    if not isinstance(spec, str):  # a StoreSpec a selector found
        return os.path.realpath(spec.path)
    text = spec.split("?", 1)[0]
    head, sep, rest = text.partition(":")
    return os.path.realpath(os.path.expanduser(rest if sep and head.isalnum() and len(head) > 1 else text))


def named_twice(stores: list[StoreRef], mode: str) -> str | None:
    """What is wrong, in a sentence, when a profile names one store twice (by real path, as
    selectors' stores are told apart): a target twice would be planned twice from one read and
    written twice, the last write winning; a source as its own target is no sync. None: each
    store once. A selector's stores are known at run time (each once, never the source)."""
    seen: dict[str, int] = {}
    for n, ref in enumerate(stores):
        if ref.selector:
            continue
        first = seen.setdefault(store_key(ref.spec), n)
        if first != n:
            if first == 0 and mode != "merge":
                return (f"the source {stores[0].spec} and the target {ref.spec} are one store ({store_key(ref.spec)}); "
                        "a store is never a target of itself: name another target")
            return f"{stores[first].spec} and {ref.spec} are one store ({store_key(ref.spec)}); name it once"
    return None


def _one_writer_per_store(profiles: dict[str, "Profile"], error) -> None:
    """A mirror's target belongs to that mirror: another profile writing it would be undone on
    every run (and a daemon would flip it back and forth for ever, rotating its backups away).
    Merges may share a store: they converge."""
    writers: dict[str, list[tuple[str, str]]] = {}
    for name, profile in profiles.items():
        written = profile.stores[1:] if profile.mode != "merge" else profile.stores
        for ref in written:
            if ref.selector:
                continue  # which stores it names is known at run time only
            text = ref.spec.split("?", 1)[0]
            head, sep, rest = text.partition(":")
            where = absolute(os.path.expanduser(rest if sep and head.isalnum() and len(head) > 1 else text))
            others = [(n, m) for n, m in writers.get(where, []) if n != name]
            if others and (profile.mode != "merge" or any(m != "merge" for _, m in others)):
                raise error(f"{where} is written by profiles {others[0][0]!r} and {name!r}; a mirror's "
                            "target may be written by that profile only", f"[profile.{name}]")
            writers.setdefault(where, []).append((name, profile.mode))


def _profile(name: str, table: dict, error_at) -> Profile:
    def error(what: str, needle: str) -> ConfigError:
        return error_at(what, needle, name)

    for key in table:
        if key not in PROFILE_KEYS:
            raise error(f"profile {name!r}: unknown key {key!r} (known: {', '.join(sorted(PROFILE_KEYS))})", key)
    mode = table.get("mode", "mirror")
    if mode not in MODES:
        raise error(f"profile {name!r}: mode must be \"mirror\", \"add\", \"remove\" or \"merge\", not {mode!r}", "mode")
    if mode != "merge":
        if "source" not in table or "targets" not in table:
            raise error(f"profile {name!r}: a {mode} profile needs `source` and `targets`", f"[profile.{name}]")
        refs = [table["source"], *_list(table["targets"], name, "targets", error)]
    else:
        if "stores" not in table:
            raise error(f"profile {name!r}: a merge profile needs `stores`", f"[profile.{name}]")
        refs = _list(table["stores"], name, "stores", error)
        if len(refs) < 2:
            raise error(f"profile {name!r}: a merge needs at least two stores", "stores")
    python = table.get("python", [])
    if not isinstance(python, list) or not all(isinstance(p, str) and p for p in python):
        raise error(f"profile {name!r}: python must be a list of Python interpreters or environments", "python")
    for n, ref in enumerate(refs):
        spec = ref.get("spec") if isinstance(ref, dict) else ref
        if isinstance(spec, str) and spec.startswith("@") and (spec.split("?")[0] not in SELECTORS or mode == "merge" or n == 0):
            what = (f"unknown selector {spec!r} (selectors: {', '.join(SELECTORS)})" if spec.split("?")[0] not in SELECTORS
                    else f"a selector names targets, not a {'merge store' if mode == 'merge' else 'source'} ({spec!r})")
            raise error(f"profile {name!r}: {what}", spec)
    if not isinstance(table.get("purposes", []), list):
        raise error(f"profile {name!r}: purposes must be a list, e.g. [\"server-auth\"]", "purposes")
    for purpose in map(str, table.get("purposes", ())):
        problem = "it is every purpose" if purpose == "any" else purpose_problem(purpose)
        if problem:
            raise error(f"profile {name!r}: purposes cannot name {purpose!r}: {problem}; name purposes to keep "
                        f"({', '.join(PURPOSES)} or an EKU OID such as 1.3.6.1.5.5.7.3.8), or leave purposes out "
                        "to keep the anchors of them all", purpose)
    purposes = tuple(purpose_from_oid(str(p)) for p in table.get("purposes", ()))  # a named one's OID is that one
    only = table.get("only", [])
    if not isinstance(only, list) or not all(isinstance(o, str) and o for o in only):
        raise error(f"profile {name!r}: only must be a list of fingerprints or label globs, e.g. [\"Corp Root*\"]", "only")
    share = table.get("max_removal_share", 0.10)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise error(f"profile {name!r}: max_removal_share must be a number from 0 to 1", "max_removal_share")
    for key in ("ca_only", "drop_expired", "allow_escalation", "allow_empty", "allow-empty"):
        if not isinstance(table.get(key, False), bool):
            raise error(f"profile {name!r}: {key} must be true or false", key)
    poll = table.get("poll", 300)
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or poll <= 0:
        raise error(f"profile {name!r}: poll must be a number of seconds above 0", "poll")
    for key in ("debounce_ms", "rescan_s"):
        value = table.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise error(f"profile {name!r}: {key} must be a whole number", key)
    stores = [_store_ref(r, name, error) for r in refs]
    twice = named_twice(stores, mode)
    if twice:
        raise error(f"profile {name!r}: {twice}", f"[profile.{name}]")
    for n, ref in enumerate(stores):
        _check_store(ref, name, mode == "merge" or n > 0, error)
    return Profile(
        name=name, mode=mode, stores=stores, purposes=purposes,
        ca_only=table.get("ca_only", True), drop_expired=table.get("drop_expired", False),
        max_removal_share=float(share), allow_escalation=table.get("allow_escalation", False),
        debounce_ms=table.get("debounce_ms", 250), rescan_s=table.get("rescan_s", 600), only=tuple(only),
        allow_empty=table.get("allow_empty", table.get("allow-empty", False)), poll=poll, python=tuple(python),
    )


def _list(value, name, key, error) -> list:
    if not isinstance(value, list):
        raise error(f"profile {name!r}: `{key}` must be a list of stores", key)
    return value


def _store_ref(value, name, error) -> StoreRef:
    if isinstance(value, str):
        return StoreRef(value)
    if isinstance(value, dict) and isinstance(value.get("spec"), str):
        hook = value.get("on-change")
        if hook is not None and not (isinstance(hook, list) and hook and all(isinstance(w, str) and w for w in hook)):
            raise error(f"profile {name!r}: on-change must be a command as a list of words, "
                        "e.g. [\"systemctl\", \"reload\", \"nginx\"] (no shell)", "on-change")
        timeout = value.get("on-change-timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise error(f"profile {name!r}: on-change-timeout must be a number of seconds above 0", "on-change-timeout")
        options = {k: str(v) for k, v in value.items() if k not in ("spec", "on-change", "on-change-timeout")}
        return StoreRef(value["spec"], options, hook, value.get("on-change-timeout"))
    raise error(f"profile {name!r}: a store is a spec string or a table with `spec`", "spec")


def _check_store(ref: StoreRef, name: str, written: bool, error) -> None:
    """A store's options, by name and value (a table's are defaults of its store, or of every
    store its selector names), and that a store to write is of a kind storesync writes: checked
    as the file is loaded, so a mistake names its line before anything runs."""
    from storesync.stores import check_selector, open_store, options_of, parse_query, parse_spec

    given = ref.options
    try:
        named, _, query = ref.spec.partition("?")
        in_spec = parse_query(ref.spec, query)
        twice = sorted(given.keys() & in_spec.keys())
        if twice:  # which of the two was meant cannot be told
            raise StoreError(f"{ref.spec}: option {twice[0]}= is given in the spec and in its table; give it once")
        if ref.selector:
            check_selector(named, {**given, **in_spec})
            return
        try:
            spec = parse_spec(ref.spec, given)
        except StoreError:
            return  # a bare path whose kind its content tells: the run says what is wrong with it
        unknown = sorted(given.keys() - set(options_of(spec.kind)))
        if unknown:  # a typo would be a default silently taken
            raise StoreError(f"{ref.spec}: {spec.kind} stores have no option {unknown[0]}=; correct the table")
        open_store(spec, written=written)
    except StoreError as exc:
        raise error(f"profile {name!r}: {exc}", ref.spec) from None

"""What the two Java store kinds (`jks`, `p12`) share: what they can express, the store
password (Java's `changeit` by default), the alias schemes, and the check that a file still
holds what its plan was made from."""

from __future__ import annotations

import re

from storesync.model import Capabilities, Entry
from storesync.stores import Store, Values

DEFAULT_PASSWORD = "changeit"
CAPABILITIES = Capabilities(purposes=False, distrust=False, distrust_after=False, labels=True)
#: The end of a sentence for a keystore its password does not open.
WRONG_PASSWORD = ("; nothing was read from it and it will not be written: give the right password with "
                  "?password-file=FILE, or restore the file (storesync rollback)")


def store_password(store: Store) -> tuple[str, bool]:
    """(password, explicit): `password-file` option's first line, else Java's `changeit`."""
    secret = store.password()
    if secret is None:
        return DEFAULT_PASSWORD, False
    try:
        return secret.decode("utf-8"), True
    except UnicodeDecodeError:
        raise store.error(f"the password file {store.option('password-file')} is not UTF-8 text") from None


DEBIAN, JDK, LABEL = "debian", "jdk", "label"
SCHEMES = (DEBIAN, JDK, LABEL)
ALIASES = Values(*SCHEMES)  # the values of `aliases=`


def detect_scheme(aliases: list[str]) -> str:
    """The alias scheme most of a store's trusted entries follow."""
    debian = sum(1 for a in aliases if a.lower().startswith("debian:") and a.lower().endswith(".pem"))
    jdk = sum(1 for a in aliases if a.endswith(" [jdk]"))
    if aliases and max(debian, jdk) * 2 > len(aliases):
        return DEBIAN if debian >= jdk else JDK
    return LABEL


def chosen_scheme(store: Store, aliases: list[str]) -> str:
    return store.option("aliases") or detect_scheme(aliases)  # its value checked as the store was opened


def make_alias(entry: Entry, scheme: str, taken: set[str], lower: bool) -> str:
    """A new alias for `entry` in `scheme`, unique among `taken` (compared lower-case)."""
    label = (entry.label or entry.cert.default_label).strip()[:200] or entry.sha256[:16]
    if scheme == DEBIAN:
        # Debian's file names come from Mozilla labels (certdata2pem.py); the hook makes the alias.
        name = label.replace("/", "_").replace(" ", "_").replace("(", "=").replace(")", "=").replace(",", "_")
        alias = f"debian:{name}.pem"
    elif scheme == JDK:
        alias = f"{re.sub(r'[^a-z0-9]', '', label.lower()) or entry.sha256[:16]} [jdk]"
    else:
        alias = label
    if lower:
        alias = alias.lower()
    if alias.lower() in taken:
        alias = f"{alias} [{entry.sha256[:8]}]"
    taken.add(alias.lower())
    return alias


def unchanged_anchor_set(store: Store, plan, file_anchors: set[str]) -> bool:
    """True when the file already holds exactly the desired anchors (nothing to rewrite).

    Refuses to go on when the file no longer holds what the plan was made from."""
    if file_anchors != set(plan.current.keys()):
        raise store.error("changed since it was read; nothing was written: run the sync again")
    return file_anchors == set(plan.desired.keys())


def key_entry_anchors(store: Store, entries) -> dict[str, tuple[Entry, str]]:
    """The certificates Java trusts through private-key entries (`Store.fixed_anchors`): its
    TrustManagerFactory takes the first certificate of every key entry as an anchor, as it takes
    every trusted-certificate entry (TrustStoreUtil.getTrustedCerts). `entries`: each one's
    certificate, labelled with its alias."""
    aliases: dict[str, list[Entry]] = {}
    for entry in entries:
        store.warnings.append(
            f"{store.path}: private-key entry {entry.label!r}: Java trusts its certificate (the first of its chain) "
            "as an anchor; storesync lists and checks it, but never copies it to another store nor removes it")
        aliases.setdefault(entry.sha256, []).append(entry)
    fixed = {}
    if aliases:
        from shlex import quote  # the alias comes from the file: a command to paste must stay one command
    for sha, held in aliases.items():
        names = " and ".join(repr(e.label) for e in held)
        delete = "; ".join(f"keytool -delete -keystore {quote(str(store.path))} -alias {quote(e.label)}" for e in held)
        fixed[sha] = held[0], (f"private-key entr{'y' if len(held) == 1 else 'ies'} {names} "
                               f"(`{delete}` takes it out, with the key{'s' if len(held) > 1 else ''})")
    return fixed

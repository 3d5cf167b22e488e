"""`anchors`: a distribution's folder of local trust anchors, which its own rebuild command
turns into the system bundle: Debian's /usr/local/share/ca-certificates (`update-ca-certificates`),
Fedora's /etc/pki/ca-trust/source/anchors (`update-ca-trust extract`); docs/formats.md §2.5.

One PEM certificate per file. Reads every `*.crt` of the folder holding exactly one certificate
(a `*.pem`, which Debian's rebuild ignores, is named in a warning, not counted as trusted). The rebuilt bundle trusts them for whatever its readers use it for; like the bundle
(and every store without purposes) the folder holds anchors for the store's `purpose`,
server-auth by default, so that nothing trusted for e-mail only is widened into it
(`purpose=any`: for every purpose, with a `!` line for what is widened). Writes `LABEL.crt` files (the label made safe and unique; `.crt`, since
Debian's rebuild takes nothing else), no hash links, and leaves every other file alone.
Certificates in subfolders, and files holding several, are not read (Debian's rebuild takes
them too): a warning says so.
"""

from __future__ import annotations

import os

from storesync.fsio import atomic_write_many, fsync_dir, remove_file
from storesync.model import Capabilities, Entry, TrustSet
from storesync.statcache import StatCache
from storesync.stores import cannot_read
from storesync.stores.directory import DirStore
from storesync.stores.pem import render_entries

SUFFIXES = (".crt",)  # all Debian's rebuild takes
OTHER_SUFFIXES = (".pem", ".cer")  # certificates Debian ignores (Fedora's takes any name): named in a warning


class AnchorsStore(DirStore):
    kind = "anchors"
    options = ()
    values: dict = {}
    new_suffix = ".crt"
    capabilities = Capabilities()  # anchors only: no purposes, no distrust, no labels
    holds = "anchor files"

    def _not_a_folder(self) -> str:
        return "an anchors store is the folder of one-certificate files: give that folder's path"

    def read(self) -> TrustSet:
        self._files, self._links, self.holds_trusted = {}, {}, False
        self.warnings = []  # what this read finds: a second read (a backup's) says it once, not again
        if not self._folder_there():
            return TrustSet()
        try:
            with os.scandir(self.path) as listing:
                found = sorted((item.name, item) for item in listing)
        except OSError as exc:
            raise self.error(cannot_read(exc, "list")) from None
        entries: list[Entry] = []
        cache = StatCache(self.spec.key)  # as a hashed directory: unchanged files are not parsed again
        for name, item in found:
            if item.is_dir() and not name.startswith("."):
                self._warn_subfolder(item.path)
            if name.endswith(OTHER_SUFFIXES) and not name.startswith(".") and item.is_file():
                self.warnings.append(f"{item.path}: not a .crt file, which Debian's update-ca-certificates ignores "
                                     "(Fedora's update-ca-trust takes it); storesync does not read or write it: "
                                     "rename it to .crt to have it managed")
            if name.startswith(".") or not name.endswith(SUFFIXES) or not item.is_file():
                continue
            entry = self._read_file(name, item.path, cache)
            if entry is None:
                continue  # a bundle or an empty file: not one anchor, left alone
            holders = self._files.setdefault(entry.sha256, [])
            holders.append(name)
            if len(holders) == 1:
                entries.append(entry)
        cache.save()
        return TrustSet(entries)

    def _warn_subfolder(self, path: str) -> None:
        try:
            held = [n for _, _, names in os.walk(path) for n in names if n.endswith(".crt")]
        except OSError:
            return
        if held:
            self.warnings.append(f"{path}: {len(held)} certificate files in a subfolder, which the system's "
                                 "rebuild may take but storesync does not read or write; move them up if they "
                                 "are to be managed")

    def _bundled(self, path, count: int) -> None:
        # The rebuild trusts every certificate of it, and storesync cannot take one out: say so
        self.warnings.append(f"{path}: {count} certificates in one file, all trusted by the system's rebuild; "
                             "storesync does not read or write it: split it into one file per certificate "
                             "to have them managed")

    def write(self, plan) -> None:
        os.makedirs(self.path, exist_ok=True)
        taken = set(os.listdir(self.path))
        files = {}
        for entry in [*plan.adds, *(after for _, after in plan.changes)]:
            names = self._files.get(entry.sha256, [])
            name = names[0] if names else self._new_name(entry, taken)
            taken.add(name)
            files[name] = render_entries([entry])
            self._files[entry.sha256] = [name, *names[1:]]
        atomic_write_many(self.path, files, sync_dir=False)
        for entry in plan.removals:  # every file holding it: a copy left behind would keep it trusted
            for name in self._files.pop(entry.sha256, []):
                remove_file(os.path.join(self.path, name))
        fsync_dir(self.path)

"""What a selection (`--only`, a profile's `purposes`, `drop_expired`) does to a target's trust, and
a distrust-after date NSS cannot hold, each checked with certutil or NSS's own database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conftest import NOW, need, run, storesync
from storesync.stores import winprops
from test_nss import certutil_flags, verify
from test_sst import group, sst


def nss_db(path: Path, certs: dict[str, tuple[object, str]]) -> Path:
    """A new NSS database holding each certificate under its nickname with certutil's flags."""
    path.mkdir()
    run(need("certutil"), "-N", "-d", f"sql:{path}", "--empty-password")
    for nick, (issued, flags) in certs.items():
        run("certutil", "-A", "-d", f"sql:{path}", "-n", nick, "-t", flags, input=issued.pem)
    return path


# --- add mode: what a selection leaves out keeps the target's trust -----------------------------


def test_add_only_leaves_the_trust_of_what_it_did_not_select_and_brings_its_distrust(tmp_path, pki):
    """`--mode add --only 'R2*'` took R5's server-auth trust away in the target (`C,p,` became
    `c,p,`): the selection keeps only R5's distrust, and that replaced the target's whole entry.
    R6 shows the other half: a distrust of the source still reaches the target."""
    r2, r5, r6 = (pki.ca(f"Scope {n}") for n in ("R2", "R5", "R6"))
    leaf = pki.leaf("leaf.test", r5)
    source = nss_db(tmp_path / "src", {"R2": (r2, "C,,"), "R5": (r5, "C,p,"), "R6": (r6, "C,p,")})
    target = nss_db(tmp_path / "tgt", {"R2": (r2, "C,,"), "R5": (r5, "C,p,"), "R6": (r6, "C,,"),
                                       "R5 leaf": (leaf, ",,")})
    assert "certificate is valid" in verify(target, "R5 leaf")

    result = storesync("sync", "--mode", "add", "--only", "R2*", f"nss:{source}", f"nss:{target}")

    assert result.returncode == 0, result.stderr
    flags = certutil_flags(target)
    assert (flags["R2"], flags["R5"], flags["R6"]) == ("C,,", "C,p,", "C,p,"), (flags, result.stdout)
    assert "certificate is valid" in verify(target, "R5 leaf")


def test_add_with_purposes_or_drop_expired_leaves_the_trust_of_what_they_did_not_select(tmp_path, pki):
    """A profile's `purposes` and `drop_expired` leave out certificates as `--only` does: in add
    mode the target keeps its own trust in them, with the source's distrust laid over it."""
    code = pki.ca("Scope Code")  # the target trusts it for code signing; the source is no anchor of it for that
    old = pki.ca("Scope Old", not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    source = nss_db(tmp_path / "src", {"Code": (code, "C,p,"), "Old": (old, "C,p,")})
    cases = {"code": ('purposes = ["code-signing"]', "Code", ",p,C"), "fresh": ('drop_expired = true\nonly = ["Old"]', "Old", "C,p,")}

    for name, (selection, nick, wanted) in cases.items():
        target = nss_db(tmp_path / name, {"Code": (code, ",,C"), "Old": (old, "C,,")})
        config = tmp_path / f"{name}.toml"
        config.write_text(f'[profile.{name}]\nmode = "add"\nsource = "nss:{source}"\ntargets = ["nss:{target}"]\n'
                          f"{selection}\n")
        result = storesync("sync", "--config", config)
        assert result.returncode == 0, result.stderr
        assert certutil_flags(target)[nick] == wanted, (name, certutil_flags(target), result.stdout)


# --- a distrust-after date NSS cannot hold -------------------------------------------------------


def test_a_windows_date_for_every_purpose_goes_into_nss_without_its_dates(tmp_path, pki):
    """DISALLOWED_FILETIME without DISALLOWED_ENHKEY_USAGE dates every purpose. The sync failed its
    read-back check and rolled back, every run. NSS applies no date to a database's root (see
    test_nss: vfychain), so none is written: each is dropped with a `!` line, a past one leaving
    the root untrusted for its purposes (here all: it is not written), a coming one trusted."""
    past, coming = pki.ca("Dated Past"), pki.ca("Dated Coming")
    dates = {"Past": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), "Coming": NOW + dt.timedelta(days=365)}
    source = tmp_path / "roots.sst"
    source.write_bytes(sst(*(group(c.der, (11, (nick + "\0").encode("utf-16-le")), (104, winprops.datetime_to_filetime(dates[nick])))
                             for nick, c in (("Past", past), ("Coming", coming)))))
    db = nss_db(tmp_path / "db", {})

    result = storesync("sync", f"sst:{source}", f"nss:{db}")

    assert result.returncode == 0, result.stderr
    assert "since that date has passed" in result.stdout and "distrust-after" in result.stdout, result.stdout
    flags = certutil_flags(db)
    assert "Past" not in flags and flags["Coming"] == "CT,C,C", flags  # T: client-auth
    import sqlite3

    with sqlite3.connect(db / "cert9.db") as conn:  # CKA_NSS_SERVER_ / CKA_NSS_EMAIL_DISTRUST_AFTER: none
        columns = {row[1] for row in conn.execute("PRAGMA table_info(nssPublic)")}
        dated = [c for c in ("ace534373", "ace534374") if c in columns]
        assert not dated or not any(v for row in conn.execute(f"SELECT {', '.join(dated)} FROM nssPublic") for v in row)

    again = storesync("sync", f"sst:{source}", f"nss:{db}")
    assert again.returncode == 0 and "in sync" in again.stdout, again
    assert storesync("diff", f"sst:{source}", f"nss:{db}").returncode == 0

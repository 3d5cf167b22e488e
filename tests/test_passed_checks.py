"""Issue 18: a check a certificate's bytes passed once (OpenSSL loads it, Java and NSS too, its
own signature verifies) is remembered by the SHA-256 of its DER in the state dir, so the next
write of the same roots skips libcrypto and `cryptography`. The cache may only save time: a
refusal is never remembered, and a cache another user could write is not believed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import need, pem_of, run, storesync
from test_damaged import broken_signature, loaded_by_owner

PROBE = ("import sys; from storesync.cli import main; sys.argv = ['storesync', *sys.argv[1:]]\n"
         "try: main()\n"
         "except SystemExit as exit: assert not exit.code, exit.code\n"
         "judge = sys.modules.get('storesync.loadable')\n"
         "print(sorted(['libcrypto'] * (judge is not None and judge._libcrypto is not None)\n"
         "             + [m for m in ('cryptography.x509',) if m in sys.modules]))")


def judged_modules(*args) -> list[str]:
    """The sync's own output, and which of libcrypto's and cryptography's modules it loaded."""
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


@pytest.fixture
def state(tmp_path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize("kind, name", [("jks", "new.jks"), ("p12", "new.p12"), ("dir", "certs")])
def test_the_same_roots_into_a_second_fresh_store_are_not_judged_again(tmp_path, state, system_bundle, kind, name):
    (tmp_path / "first").mkdir()
    first = storesync("sync", "--state-dir", state, f"pem:{system_bundle}", f"{kind}:{tmp_path / 'first' / name}")
    assert first.returncode == 0, first.stderr
    assert (state / "passed-checks").stat().st_mode & 0o077 == 0  # nobody else may read or write it

    lines = judged_modules("sync", "--state-dir", state, f"pem:{system_bundle}", f"{kind}:{tmp_path / name}")

    assert lines[-1] == "[]", lines
    assert loaded_by_owner(kind, tmp_path / name) == loaded_by_owner(kind, tmp_path / "first" / name)


def nss_db(path: Path) -> Path:
    need("certutil")
    path.mkdir()
    run("certutil", "-N", "-d", f"sql:{path}", "--empty-password")
    return path


def test_the_same_roots_into_a_second_fresh_nss_database_are_not_judged_again(tmp_path, state, system_bundle):
    first = storesync("sync", "--state-dir", state, f"pem:{system_bundle}", f"nss:{nss_db(tmp_path / 'first')}")
    assert first.returncode == 0, first.stderr

    lines = judged_modules("sync", "--state-dir", state, f"pem:{system_bundle}", f"nss:{nss_db(tmp_path / 'second')}")

    assert lines[-1] == "[]", lines


def forged_source(tmp_path, pki) -> tuple[Path, bytes]:
    good = pki.ca("Passed Checks Good Root").der
    forged = broken_signature(pki.ca("Passed Checks Forged Root").der)
    source = tmp_path / "source.pem"
    source.write_bytes(pem_of(good) + pem_of(forged))
    return source, forged


def test_a_refusal_is_never_remembered(tmp_path, state, pki):
    source, _ = forged_source(tmp_path, pki)
    for name in ("a.jks", "b.jks"):
        result = storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / name}")
        assert result.returncode == 0, result.stderr
        assert "! Passed Checks Forged Root" in result.stdout and "does not verify" in result.stdout, result.stdout
        assert loaded_by_owner("jks", tmp_path / name) == 1


def vouch_for(state: Path, der_bytes: bytes, mode: int) -> None:
    """Lines in the cache saying the forged root passed every check, sorted in as `save` keeps them."""
    import hashlib

    sha = hashlib.sha256(der_bytes).hexdigest()
    cache = state / "passed-checks"
    head, *lines = cache.read_text().splitlines()
    lines += [f"{sha} {r}" for r in ("openssl", "java", "nss", "signature")]
    cache.write_text("\n".join([head, *sorted(lines)]) + "\n")
    cache.chmod(mode)


@pytest.mark.parametrize("writable", ["file", "directory"])
def test_a_cache_another_user_could_write_is_not_believed(tmp_path, state, pki, writable):
    source, forged = forged_source(tmp_path, pki)
    assert storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'first.jks'}").returncode == 0
    vouch_for(state, forged, 0o666 if writable == "file" else 0o600)
    if writable == "directory":
        state.chmod(0o777)

    result = storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'second.jks'}")

    assert result.returncode == 0, result.stderr
    assert "! Passed Checks Forged Root" in result.stdout, result.stdout
    assert loaded_by_owner("jks", tmp_path / "second.jks") == 1


def test_a_cache_only_its_owner_can_write_is_believed(tmp_path, state, pki):
    """The control of the test above: the same forged line in a private cache is believed (the
    owner could write the store itself), so it is the permission check that refuses above."""
    source, forged = forged_source(tmp_path, pki)
    assert storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'first.jks'}").returncode == 0
    vouch_for(state, forged, 0o600)

    result = storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'second.jks'}")

    assert "Passed Checks Forged Root" in result.stdout and "!" not in result.stdout, result.stdout


def test_a_cache_of_other_rules_is_not_believed(tmp_path, state, pki):
    source, forged = forged_source(tmp_path, pki)
    assert storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'first.jks'}").returncode == 0
    vouch_for(state, forged, 0o600)
    cache = state / "passed-checks"
    cache.write_text(cache.read_text().replace("storesync-passed-checks 1", "storesync-passed-checks 0", 1))

    result = storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'second.jks'}")

    assert "! Passed Checks Forged Root" in result.stdout, result.stdout


def test_what_passed_only_a_stand_in_judge_is_not_remembered(tmp_path, state, monkeypatch):
    """Without a libcrypto, cryptography judges and cannot verify SHA-1: a forged SHA-1 root is not
    shown to fail. That is no pass to remember for runs that have libcrypto to ask."""
    from storesync import loadable
    from storesync.model import Certificate
    from test_damaged import sha1_root

    forged = broken_signature(sha1_root())
    monkeypatch.setattr(loadable, "_passed", {name: set() for name in loadable._CHECKS})
    monkeypatch.setattr(loadable, "_notes", {})
    monkeypatch.setattr(loadable, "_added", [])
    monkeypatch.setattr(loadable, "_cache_dir", None)
    monkeypatch.setattr(loadable, "_file", b"")
    monkeypatch.setattr(loadable, "_libcrypto", False)
    loadable.remember_in(state)
    assert loadable.refusal(Certificate(forged), loadable.JAVA) is None
    assert not loadable.bad_self_signature(Certificate(forged))
    loadable.save()
    source = tmp_path / "source.pem"
    source.write_bytes(pem_of(forged))

    result = storesync("sync", "--state-dir", state, f"pem:{source}", f"jks:{tmp_path / 'out.jks'}")

    assert "a self-signed root whose signature does not verify" in result.stdout, result.stdout


# --- the cache file in memory: one int per passed check ---------------------------------------


@pytest.fixture
def fresh_loadable(monkeypatch):
    from storesync import loadable

    for name, value in (("_passed", {name: set() for name in loadable._CHECKS}), ("_notes", {}), ("_labels", {}), ("_outlines", {}), ("_added", []),
                        ("_cache_dir", None), ("_file", b""), ("_lookups", 0)):
        monkeypatch.setattr(loadable, name, value)
    return loadable


def believed(loadable, sha: str) -> list[str]:
    """What the remembered checks (this run's, or the file's) vouch for about `sha`."""
    return [n for n in loadable._CHECKS if loadable.passed(f"{sha} {n}")] + [
        n for n in ("label", "outline") if loadable._noted(sha, n)[1] is not None]


def write_cache(state: Path, lines) -> None:
    from storesync.loadable import _CACHE_NAME, _RULES

    (state / _CACHE_NAME).write_text("\n".join([_RULES, *lines]) + "\n")
    (state / _CACHE_NAME).chmod(0o600)


def test_remembered_checks_cost_less_than_twice_the_file_not_three_times(tmp_path, state, fresh_loadable):
    """30 000 lines (three checks for each of 10 000 certificates): a set of their strings (and a
    second set beside it, of what the file held) cost 3.1 times the file; an int each, 1.6 times."""
    import hashlib
    import tracemalloc

    lines = [f"{hashlib.sha256(b'%d' % n).hexdigest()} {r}" for n in range(10_000)
             for r in ("java", "signature", "x509")]
    write_cache(state, lines)
    size = (state / "passed-checks").stat().st_size
    tracemalloc.start()
    try:
        fresh_loadable.remember_in(state)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * size, f"{held / size:.1f}x the file held"
    assert all(fresh_loadable.passed(line) for line in lines[::997])
    assert not fresh_loadable.passed(lines[0].replace("java", "nss"))  # another check of the same bytes


def test_save_adds_this_runs_checks_to_the_file_as_it_is_now(tmp_path, state, fresh_loadable):
    """What another run added after this one read the file stays."""
    a, b, c, d = (f"{ch * 64} java" for ch in "abcd")
    write_cache(state, [a])
    fresh_loadable.remember_in(state)
    write_cache(state, [a, c])  # another run, meanwhile
    fresh_loadable.remember(b)
    fresh_loadable.remember_parse("d" * 64, "a warning")
    fresh_loadable.save()
    lines = (state / "passed-checks").read_text().splitlines()
    assert lines[1:] == [a, c, b, f"{'d' * 64} x509 YSB3YXJuaW5n."]  # a note ends with a dot
    mtime = (state / "passed-checks").stat().st_mtime_ns
    fresh_loadable.save()  # nothing new since: not written again
    assert (state / "passed-checks").stat().st_mtime_ns == mtime

    from storesync import loadable
    from storesync.model import Certificate

    loadable._passed, loadable._notes, loadable._cache_dir = {n: set() for n in loadable._CHECKS}, {}, None
    loadable.remember_in(state)
    assert all(loadable.passed(line) for line in (a, b, c)) and not loadable.passed(d)

    class Known:
        sha256 = "d" * 64
    assert loadable.remembered_parse(Known) == ("a warning",)


@pytest.mark.parametrize("existing", [True, False])
def test_save_writes_many_checks_a_batch_at_a_time(tmp_path, state, fresh_loadable, existing):
    """A first sync of 10 000 roots remembers 50 000 checks: their lines made into one text were a
    fifth of its peak memory. They go out in batches of whole lines, appended or into a new
    file, and all of them arrive."""
    import hashlib
    import tracemalloc

    lines = [f"{hashlib.sha256(b'%d' % n).hexdigest()} {r}" for n in range(15_000) for r in ("java", "x509")]
    if existing:
        write_cache(state, lines[:1])
    fresh_loadable.remember_in(state)
    for line in lines:
        fresh_loadable.remember(line)
    size = sum(len(line) + 1 for line in lines)
    tracemalloc.start()
    try:
        fresh_loadable.save()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (state / "passed-checks").read_text().splitlines()[1:] == lines
    assert peak < size / 4, f"saving {size} bytes of lines held {peak} at once"


def test_only_checks_this_version_knows_are_believed(tmp_path, state, fresh_loadable):
    """A line of a check this version does not run (or not a check at all) vouches for nothing."""
    sha = "e" * 64
    write_cache(state, [f"{sha} java-17", f"{sha[:-1]} java", "garbage", f"{'g' * 64} java", f"{sha} nss extra"])
    fresh_loadable.remember_in(state)
    assert not any(believed(fresh_loadable, x * 64) for x in "eg") and not believed(fresh_loadable, sha[:-1] + "e")
    with pytest.raises(ValueError):
        fresh_loadable.remember(f"{sha} unknown-check")


def test_save_appends_after_a_line_a_crash_cut_short_and_starts_afresh_over_other_rules(tmp_path, state, fresh_loadable):
    a, b = f"{'a' * 64} java", f"{'b' * 64} java"
    cache = state / "passed-checks"
    cache.write_text(f"storesync-passed-checks 1\n{a}\n{'c' * 40}")  # the last line cut short
    cache.chmod(0o600)
    fresh_loadable.remember_in(state)
    fresh_loadable.remember(b)
    fresh_loadable.save()
    assert cache.read_text().splitlines()[1:] == [a, f"{'c' * 40} (cut short)", b]

    cache.write_text(f"storesync-passed-checks 0\n{a}\n")  # another version's rules
    fresh_loadable.remember(f"{'d' * 64} java")
    fresh_loadable.save()
    assert cache.read_text().splitlines() == ["storesync-passed-checks 1", f"{'d' * 64} java"]
    assert cache.stat().st_mode & 0o077 == 0


# --- what a sync asks of every certificate it adds: that ca_only lets it in, its label ----------

WALKS = ("import collections, sys\n"
         "from storesync import der, model\n"
         "walked = collections.Counter()\n"
         "def counting(name, real):\n"
         "    def call(*args):\n"
         "        walked[name] += 1\n"
         "        return real(*args)\n"
         "    return call\n"
         "der.cert_fields = counting('fields', der.cert_fields)\n"
         "der.extensions = counting('extensions', der.extensions)\n"
         "model.name_attributes = counting('names', model.name_attributes)\n"
         "from storesync.cli import main\n"
         "sys.argv = ['storesync', *sys.argv[1:]]\n"
         "try: main()\n"
         "except SystemExit as exit: assert not exit.code, exit.code\n"
         "print({name: walked[name] for name in ('fields', 'extensions', 'names')})")


def walked(*args) -> tuple[dict[str, int], list[str]]:
    """How many certificates a sync's DER walks went through (their fields, their extensions,
    their subject's attributes), and the lines it printed."""
    out = subprocess.run([sys.executable, "-c", WALKS, *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    *printed, counts = out.stdout.splitlines()
    import ast

    return ast.literal_eval(counts), printed


@pytest.mark.parametrize("kind", ["jks", "p12"])
def test_the_same_roots_again_are_not_walked_for_their_ca_flag_or_label(tmp_path, state, pki, kind):
    """ca_only's verdict (a pass) and the label of each certificate a sync adds are remembered
    by the SHA-256 of its bytes: a second sync of the same roots walks no extensions and no
    subject, and names and prints every one as the first did."""
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Remembered Root {n}").pem for n in range(6)))
    first, first_lines = walked("sync", "--state-dir", state, f"pem:{source}", f"{kind}:{tmp_path / f'first.{kind}'}")
    assert first["extensions"] >= 6 and first["names"] >= 6  # the first run works them out

    again, lines = walked("sync", "--state-dir", state, f"pem:{source}", f"{kind}:{tmp_path / f'second.{kind}'}")

    assert (again["extensions"], again["names"]) == (0, 0), again
    assert lines[1:-1] == first_lines[1:-1]  # the plan's lines: the same labels (not the header, nor the backup)
    assert (tmp_path / f"second.{kind}").read_bytes() == (tmp_path / f"first.{kind}").read_bytes()  # the same aliases


def test_a_sync_of_the_system_roots_from_the_stat_cache_walks_no_certificate(tmp_path, state, system_bundle):
    """The bundle comes from the stat cache, its certificates' outlines checked when it was
    parsed; what planning asks of them is remembered: neither the plan nor the read-back of the
    new store walks any certificate's DER."""
    for name in ("warm.jks", "first.jks"):
        storesync("sync", "--state-dir", state, f"pem:{system_bundle}", f"jks:{tmp_path / name}", check=True)

    counts, _ = walked("sync", "--state-dir", state, f"pem:{system_bundle}", f"jks:{tmp_path / 'new.jks'}")

    assert counts == {"fields": 0, "extensions": 0, "names": 0}
    assert loaded_by_owner("jks", tmp_path / "new.jks") == loaded_by_owner("jks", tmp_path / "first.jks")


def test_a_leaf_is_not_remembered_as_an_anchor_and_a_label_is_remembered_as_made(fresh_loadable, state, pki):
    """ca_only's refusal is never remembered (as no check's); a remembered label that is not one
    `default_label` makes (a line break, an ESC) is worked out again."""
    from storesync.model import Certificate

    fresh_loadable.remember_in(state)
    leaf = Certificate(pki.leaf("leaf.example", pki.ca("Leaf Issuer")).der)
    root = Certificate(pki.ca("Labelled Root").der)
    assert fresh_loadable.may_anchor(leaf) is False and fresh_loadable.may_anchor(root) is True
    assert fresh_loadable.label(root) == "Labelled Root"
    fresh_loadable.save()
    lines = (state / "passed-checks").read_text().splitlines()[1:]
    assert lines == [f"{root.sha256} anchor", f"{root.sha256} label TGFiZWxsZWQgUm9vdA==."]

    import base64

    forged = base64.urlsafe_b64encode(b"Labelled\n\x1b[31mRoot").decode()
    write_cache(state, [f"{root.sha256} anchor", f"{root.sha256} label {forged}."])
    fresh_loadable.forget()
    fresh_loadable.remember_in(state)
    again = Certificate(pki.ca("Labelled Root").der)
    again.__dict__.clear()
    assert fresh_loadable.label(again) == "Labelled Root"


def test_each_passed_check_is_written_once(tmp_path, state, pki):
    """A Java check remembers that `cryptography` parses the certificate, and so did dropping that
    parse: every root's x509 line was in the file twice, read again by every run."""
    source = tmp_path / "roots.pem"
    source.write_bytes(b"".join(pki.ca(f"Once Root {n}").pem for n in range(3)))
    for name in ("a.jks", "b.p12", "c.jks"):
        result = storesync("sync", "--state-dir", state, f"pem:{source}", f"{name[-3:]}:{tmp_path / name}")
        assert result.returncode == 0, result.stderr
    lines = (state / "passed-checks").read_text().splitlines()[1:]
    assert len(lines) == len(set(lines)) and sum(line.endswith(" x509") for line in lines) == 3


def test_a_label_line_a_crash_cut_short_is_not_believed(fresh_loadable, state, pki):
    """A label's note ends with a dot: a line cut short by a crash (whose base64 may still decode,
    to the start of the label) names no alias or nickname; the label is worked out again."""
    import base64

    from storesync.model import Certificate

    root = Certificate(pki.ca("Example Corporate Root CA 2026").der)
    note = base64.urlsafe_b64encode(b"Example Corporate Root CA 2026").decode()
    write_cache(state, [f"{root.sha256} label {note[:16]}"])  # "Example Corp", had it been believed
    fresh_loadable.remember_in(state)
    root.__dict__.clear()
    assert fresh_loadable.label(root) == "Example Corporate Root CA 2026"


def test_a_save_that_fails_halfway_writes_no_line_twice_when_tried_again(tmp_path, state, fresh_loadable, monkeypatch):
    """The lines of a batch wholly written are dropped from what is still to save: a disk that
    fills up after the first batch, then frees, leaves each line in the file once (a sync saves
    twice, before and after its writes)."""
    import hashlib
    import os

    write_cache(state, [])
    fresh_loadable.remember_in(state)
    lines = [f"{hashlib.sha256(b'%d' % n).hexdigest()} java" for n in range(3 * fresh_loadable._BATCH)]
    for line in lines:
        fresh_loadable.remember(line)
    real_write, writes = os.write, []

    def filling(fd, data):
        writes.append(len(data))
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling)
    fresh_loadable.save()  # the first batch in, the second refused
    monkeypatch.setattr(os, "write", real_write)
    fresh_loadable.save()
    assert (state / "passed-checks").read_text().splitlines()[1:] == lines


@pytest.mark.parametrize("line", [f"{'d' * 64} x509 YSB3YXJuaW5n.", f"{'d' * 64} label RXhhbXBsZSBSb290.",
                                  f"{'d' * 64} outline [\"C=ES,O=A. B,CN=\\u00c9\", \"2011-05-05T09:37:37+00:00\", \"2030-12-31T09:37:37+00:00\"].",
                                  f"{'d' * 64} nss-empty-password", f"{'d' * 64} signature"])
@pytest.mark.parametrize("saved", [False, True], ids=["as-left", "after-a-save"])
def test_no_line_a_crash_cut_short_is_believed(state, fresh_loadable, line, saved):
    """The last line of a run killed while saving may stop anywhere: as it was left, or after the
    next run's save appended to it, it vouches for nothing. ("x509 NOTE." cut to "x509" said the
    certificate parses without a warning; "nss-empty-password" cut to "nss", that NSS loads it.)"""
    for cut in range(66, len(line)):  # a cut in the hash names another certificate (a preimage)
        for name, value in (("_passed", {n: set() for n in fresh_loadable._CHECKS}), ("_notes", {}), ("_labels", {}), ("_outlines", {}),
                            ("_added", []), ("_cache_dir", None), ("_file", b"")):
            setattr(fresh_loadable, name, value)
        write_cache(state, [])
        with open(state / "passed-checks", "a") as file:
            file.write(line[:cut])
        if saved:
            fresh_loadable.remember_in(state)
            fresh_loadable.remember(f"{'e' * 64} java")
            fresh_loadable.save()
            fresh_loadable._passed, fresh_loadable._cache_dir = {n: set() for n in fresh_loadable._CHECKS}, None
        fresh_loadable.remember_in(state)
        said = believed(fresh_loadable, "d" * 64)
        assert not said, f"{line[:cut]!r}: believed as {said}"
        assert fresh_loadable.passed(f"{'e' * 64} java") == saved
    write_cache(state, [line])  # the whole line is believed
    fresh_loadable._passed, fresh_loadable._labels, fresh_loadable._outlines, fresh_loadable._cache_dir = {n: set() for n in fresh_loadable._CHECKS}, {}, {}, None
    fresh_loadable.remember_in(state)
    assert believed(fresh_loadable, "d" * 64)


def test_a_large_file_is_looked_up_where_it_lies_and_parsed_once_only_for_many_lookups(state, fresh_loadable,
                                                                                      monkeypatch):
    """The file keeps every certificate the machine ever checked: every run parsed its every line
    (21 ms for 21 000 lines), even one asking nothing. A run asking about a few certificates is
    answered where the lines lie; one asking about many parses the file once."""
    import hashlib

    lines = [f"{hashlib.sha256(b'%d' % n).hexdigest()} {check}" for n in range(10_000) for check in ("java", "anchor")]
    write_cache(state, lines)
    parses, real = [], fresh_loadable._believe
    monkeypatch.setattr(fresh_loadable, "_believe", lambda file: (parses.append(1), real(file)))
    fresh_loadable.remember_in(state)
    assert all(fresh_loadable.passed(line) for line in lines[:fresh_loadable._BULK_AFTER]) and parses == []
    assert all(fresh_loadable.passed(line) for line in lines) and parses == [1]
    assert not fresh_loadable.passed(lines[0].replace("java", "nss"))


NOTE_LINES = st.lists(st.tuples(
    st.sampled_from("abc"), st.sampled_from(["java", "x509", "label", "outline", "nss", "anchor", "java-17"]),
    st.sampled_from(["", " Tm90ZQ.", " cut", " Y2Fu."]), st.booleans()), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=NOTE_LINES)
def test_looked_up_in_place_the_file_says_what_its_parse_says(state, fresh_loadable, entries):
    """Whatever the lines (notes, lines cut short, checks said twice or unknown), a lookup where
    they lie answers as the parse of every line does."""
    from storesync.loadable import _CACHE_NAME, _RULES

    # a line not whole is cut short: one of the file's middle (a crash, then a save) or its last
    text = "".join(f"{ch * 64} {check}{note}" + ("\n" if whole else "") for ch, check, note, whole in entries)
    (state / _CACHE_NAME).write_text(_RULES + "\n" + text)
    (state / _CACHE_NAME).chmod(0o600)
    answers, bulk_after = [], fresh_loadable._BULK_AFTER
    try:
        for bulk in (10**9, 0):  # in place; parsed whole at the first lookup
            for name, value in (("_passed", {n: set() for n in fresh_loadable._CHECKS}), ("_notes", {}), ("_labels", {}), ("_outlines", {}),
                                ("_outlines", {}), ("_cache_dir", None), ("_file", b""), ("_lookups", 0),
                                ("_BULK_AFTER", bulk)):
                setattr(fresh_loadable, name, value)
            fresh_loadable.remember_in(state)
            answers.append([(believed(fresh_loadable, ch * 64), fresh_loadable._x509_note(ch * 64),
                             fresh_loadable._noted(ch * 64, "label")[1], fresh_loadable._noted(ch * 64, "outline")[1])
                            for ch in "abc"])
    finally:
        fresh_loadable._BULK_AFTER = bulk_after
    assert answers[0] == answers[1]


@pytest.mark.parametrize("dates", [
    '"2020-01-01", "2126-12-20"',  # no zone: --expiring compared it with an aware date and crashed
    '"2020-01-01T00:00:00+05:00", "2126-12-20T00:00:00+05:00"',  # another zone: printed as no run prints it
    '"2020-01-01T00:00:00.500000+00:00", "2126-12-20T00:00:00+00:00"',  # a fraction: the same
    '[[[' * 3000 + ']]]' * 3000 + ', "x"',  # nested thousands deep: json raised RecursionError
    '"2020-01-01T00:00:00+00:00"',  # one date
    '7, "2126-12-20T00:00:00+00:00"',  # not a date
])
def test_an_outline_line_no_run_writes_is_not_believed(state, pki, tmp_path, dates):
    """An `outline` line in the owner's own file, but not one storesync writes (a hand edit, another
    version), is worked out again from the certificate: never believed, never a traceback."""
    import json

    bundle = tmp_path / "one.pem"
    bundle.write_bytes(pki.ca("Outline Root").pem)
    env = {**__import__("os").environ, "STORESYNC_STATE_DIR": str(state)}
    for _ in range(2):  # the first parses and remembers the parse; the second remembers the outline
        assert storesync("list", f"pem:{bundle}", "--json", env=env).returncode == 0
    shown = storesync("list", f"pem:{bundle}", "--json", env=env).stdout
    lines = (state / "passed-checks").read_text().splitlines()
    outlined = [n for n, line in enumerate(lines) if " outline " in line]
    assert len(outlined) == 1
    sha = lines[outlined[0]].split()[0]
    lines[outlined[0]] = f'{sha} outline ["CN=Forged", {dates}].'
    (state / "passed-checks").write_text("\n".join(lines) + "\n")
    again = storesync("list", f"pem:{bundle}", "--json", env=env)
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == shown and json.loads(shown)["entries"][0]["subject"] == "CN=Outline Root"
    for flag in (["--expiring", "30"], ["--expired"]):
        expiring = storesync("list", f"pem:{bundle}", *flag, env=env)
        assert (expiring.returncode, expiring.stderr) == (0, ""), flag

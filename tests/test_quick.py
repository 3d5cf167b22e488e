"""The quick parser (plain list/diff/sync/check without typer) must mean exactly what typer means."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

import importlib

from storesync import cli
from storesync.cli.app import app

COMMANDS = {"list": "list", "diff": "diff", "sync": "sync", "check": "check"}  # command -> its module in storesync.cli
MODULES = {name: importlib.import_module(f"storesync.cli.{name}") for name in COMMANDS.values()}
IMPLEMENTATIONS = {name: module.run for name, module in MODULES.items()}  # before any test replaces them


def typer_call(monkeypatch, argv: list[str]):
    """The arguments typer hands the command for `argv` (None: typer refused the line)."""
    seen = {}
    for name in COMMANDS.values():
        def record(_name=name, **kwargs):
            seen.update(command=_name, arguments=kwargs)
        monkeypatch.setattr(MODULES[name], "run", record)
    result = CliRunner().invoke(app, argv)
    if not seen:
        return None
    # typer gives a path option as a Path, the quick parser as typed (it imports no pathlib): one file
    return seen["command"], {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in seen["arguments"].items()}


def with_defaults(command, arguments: dict) -> dict:
    defaults = {n: p.default for n, p in inspect.signature(command).parameters.items() if p.default is not p.empty}
    return {**defaults, **arguments}


VALUES = {tuple: st.sampled_from(["0123456789abcdef01", "Corp*", "x y"]),
          str: st.sampled_from(["add", "mirror", "email", "p", "x y", "ÄÖÜ"]), int: st.sampled_from(["0", "30", " 7", "+3"]),
          "path": st.sampled_from(["/etc/s.toml", "rel/pw", "/tmp/a b"])}
STORES = st.sampled_from(["pem:/a.pem", "dir:/b", "nss:/c?builtins=certdata:/d", "/e f", "x=y"])
JUNK = st.sampled_from(["-", "--", "--help", "-h", "--json=1", "--mode", "--expiring=x", "-5", "--verbose", "", "check"])


@st.composite
def command_lines(draw):
    """Mostly lines the quick parser takes (every option, both spellings, any order), some it must not."""
    command = draw(st.sampled_from(sorted(cli.QUICK_FORMS)))
    positional, options = cli.QUICK_FORMS[command]
    words = [draw(STORES) for _ in positional if _[-1] != "?" and _[0] != "*"]
    words += draw(st.lists(STORES, max_size=3)) if positional[-1][0] == "*" else []
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)):
        kind = options[option][1]
        if kind is bool:
            words.insert(draw(st.integers(0, len(words))), option)
            continue
        value = draw(VALUES["path" if kind is cli.path else kind])
        pair = [f"{option}={value}"] if draw(st.booleans()) else [option, value]
        at = draw(st.integers(0, len(words)))
        words[at:at] = pair
    if draw(st.integers(0, 4)) == 0:
        words.insert(draw(st.integers(0, len(words))), draw(JUNK))
    return [command, *words]


@settings(max_examples=400, deadline=None)
@given(argv=command_lines())
def test_quick_parse_agrees_with_typer(monkeypatch_session, argv):
    quick = cli.quick_parse(argv)
    expected = typer_call(monkeypatch_session, argv)
    if quick is None:
        return  # typer parses it, as it always did
    assert expected is not None, f"typer refuses {argv}, the quick parser took it"
    command, arguments = quick
    name, typer_arguments = expected
    assert COMMANDS[command] == name
    assert with_defaults(IMPLEMENTATIONS[name], arguments) == typer_arguments, argv


@pytest.mark.parametrize("command", sorted(cli.QUICK_FORMS))
def test_every_quick_option_means_what_typer_means(monkeypatch_session, command):
    positional, options = cli.QUICK_FORMS[command]
    stores = ["pem:/a", "dir:/b"][: len([n for n in positional if n[-1] != "?"])] or ["pem:/a", "dir:/b"]
    for option, (_, kind) in options.items():
        argv = [command, *stores, option] + ([] if kind is bool else ["30" if kind is int else "v"])
        assert cli.quick_parse(argv) is not None, argv
        command_name, arguments = cli.quick_parse(argv)
        assert with_defaults(IMPLEMENTATIONS[COMMANDS[command]], arguments) == typer_call(monkeypatch_session, argv)[1]


@pytest.fixture(scope="module")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("argv", [
    ["sync", "pem:/a", "dir:/b", "--dry-run", "--mode", "add", "--json"],
    ["sync", "--profile=p", "--config", "/c.toml"],
    ["list", "pem:/a", "--expiring", "30", "--password-file", "/pw"],
    ["diff", "pem:/a", "--json", "dir:/b"],
    ["sync", "--only", "ab" * 32, "--only=Corp*", "pem:/a", "pem:/b", "--mode", "add"],
])
def test_everyday_lines_take_the_quick_path(argv):
    assert cli.quick_parse(argv) is not None


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["sync", "--help"], ["sync", "a", "--", "b"], ["list"], ["list", "a", "b"], ["diff", "a"],
    ["list", "a", "--expiring", "soon"], ["sync", "a", "b", "--mode"], ["sync", "a", "--unknown"], ["status"],
])
def test_everything_else_goes_to_typer(argv):
    assert cli.quick_parse(argv) is None


def test_only_is_repeatable_in_both_parsers(monkeypatch_session):
    argv = ["sync", "pem:/a", "--only", "Corp*", "pem:/b", "--only=" + "ab" * 32]
    assert cli.quick_parse(argv)[1]["only"] == ("Corp*", "ab" * 32)
    assert typer_call(monkeypatch_session, argv)[1]["only"] == ("Corp*", "ab" * 32)


def test_a_plain_sync_does_not_load_typer(tmp_path, pki):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca("Quick Root").pem)
    code = ("import sys; from storesync.cli import main; sys.argv = ['storesync', 'sync', sys.argv[1], sys.argv[2]]\n"
            "try: main()\nexcept SystemExit: pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code, f"pem:{bundle}", f"dir:{tmp_path / 'dir'}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "dir").is_dir()

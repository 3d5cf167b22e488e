"""Issue 18: `--json` is streamed by json's C encoder, one certificate per line, valid JSON; `list`
hands it a generator, so the whole list of entries is never held. Checked against the real CLI
and against `jq` where it is installed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

from conftest import storesync


def printed(data) -> str:
    from storesync.cli.common import print_json

    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_json(data)
    return out.getvalue()


def test_print_json_streams_a_generator_one_element_per_line():
    """Each element is written before the next is made: a generator of 10 000 certificates is
    never held whole, nor is the text."""
    from storesync.cli.common import print_json

    import contextlib

    out = io.StringIO()
    seen = []

    def entries():
        for i in range(3):
            seen.append(out.getvalue().count("\n"))  # lines written before element i is made
            yield {"n": i, "trust": {"server-auth": "trusted"}, "subject": "CN=é,O=\"x\""}

    with contextlib.redirect_stdout(out):
        print_json({"store": "pem:x", "entries": entries()})
    text = out.getvalue()
    assert seen == [2, 3, 4]
    assert json.loads(text) == {"store": "pem:x", "entries": [
        {"n": i, "trust": {"server-auth": "trusted"}, "subject": "CN=é,O=\"x\""} for i in range(3)]}
    assert text.splitlines()[4] == '    {"n": 1, "trust": {"server-auth": "trusted"}, "subject": "CN=\\u00e9,O=\\"x\\""},'


def test_print_json_is_json_for_every_shape():
    for data, expected in (({}, {}), ([], []), ({"a": []}, {"a": []}), ({"a": (x for x in ())}, {"a": []}),
                           ([1, {"b": [2]}], [1, {"b": [2]}]), ("s", "s"), (None, None),
                           ({"x": None, "y": {"z": [1]}}, {"x": None, "y": {"z": [1]}}),
                           ({"l": [[1, 2], {"k": "v"}], "t": (1, 2)}, {"l": [[1, 2], {"k": "v"}], "t": [1, 2]})):
        text = printed(data)
        assert json.loads(text) == expected, text
        assert text.endswith("\n") and not text.endswith("\n\n")


def test_list_json_prints_one_certificate_per_line(tmp_path, system_bundle):
    listed = storesync("list", f"pem:{system_bundle}", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    lines = listed.stdout.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and lines[2] == '  "entries": ['
    certificate_lines = lines[3:-2]
    assert len(certificate_lines) == len(data["entries"]) > 100
    assert [json.loads(line.strip().rstrip(",")) for line in certificate_lines] == data["entries"]
    if shutil.which("jq"):
        labels = subprocess.run(["jq", "-r", ".entries[].label"], input=listed.stdout, capture_output=True, text=True)
        assert labels.stdout.splitlines() == [e["label"] for e in data["entries"]]

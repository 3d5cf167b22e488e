"""The layers stay layers: every import arrow points down, no module imports another in a
circle, every module imports on its own, and the one-shot path stays lean (README, Design notes)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import storesync

PACKAGE = Path(storesync.__file__).parent

#: Top first. A module may import from its own layer or any below, never from one above.
LAYERS = [
    ["storesync.__main__", "storesync.cli"],
    ["storesync.check", "storesync.status", "storesync.daemon", "storesync.metrics", "storesync.servers",
     "storesync.discover", "storesync.publish"],
    ["storesync.engine", "storesync.config"],
    ["storesync.stores"],
    ["storesync.model", "storesync.pbe", "storesync.fsio", "storesync.state", "storesync.statcache", "storesync.loadable",
     "storesync.hooks"],
    ["storesync.der", "storesync.libcrypto", "storesync"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("storesync", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module: str) -> int | None:
    """The index of the module's layer (None: in none; the package itself holds only __version__)."""
    matches = [prefix for group in LAYERS for prefix in group
               if module == prefix or prefix != "storesync" and module.startswith(prefix + ".")]
    return next(i for i, group in enumerate(LAYERS) if max(matches, key=len) in group) if matches else None


def imports(module: str, path: Path, known: set[str], missing: list[str] | None = None) -> set[str]:
    """The storesync modules `module` imports anywhere in it (top level or in a function), but
    not those only named for type checkers. Imports of storesync modules that do not exist go
    to `missing`."""
    found = set()
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
            if any(name not in known for name in names):
                names.append(base)  # not only submodules: the package's own names (a parent
                # package that is imported only on the way to a submodule is no arrow)
        else:
            continue
        asked = [base] if isinstance(node, ast.ImportFrom) else names
        missing_here = [m for m in asked if m.startswith("storesync.") and m not in known]
        if missing is not None:
            missing += [f"{module} imports {m}" for m in missing_here]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]  # `from storesync.model import Entry` is storesync.model
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_no_import_arrow_points_up():
    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
              if b != "storesync" and None not in (layer(a), layer(b)) and layer(b) < layer(a)]
    assert upward == [], "imports from a higher layer (see LAYERS): " + "; ".join(upward)


def test_no_import_circle():
    edges = {a: {b for b in targets if b != "storesync"} for a, targets in graph().items()}
    cycles, done = [], set()

    def visit(node, path):
        if node in path:
            cycles.append(" -> ".join(path[path.index(node):] + [node]))
            return
        if node in done:
            return
        for target in sorted(edges.get(node, ())):
            visit(target, path + [node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])
    assert cycles == [], "import circles: " + "; ".join(cycles)


def test_every_import_names_a_module_that_exists():
    """A module renamed or merged leaves no import of its old name behind (most sit in functions)."""
    found, missing = modules(), []
    for name, path in found.items():
        imports(name, path, set(found), missing)
    assert missing == []


def test_every_module_is_in_a_layer():
    assert [name for name in modules() if layer(name) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "storesync.__main__"))
def test_every_module_imports_on_its_own(module):
    """A fresh interpreter each: a circle that only bites when one module is imported first shows here."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_one_shot_sync_imports_no_heavy_module(tmp_path, pki):
    """`storesync sync A B` of two PEM bundles, in process: no typer, rich, dataclasses, typing
    or cryptography (README, Design notes: start-up is most of a one-shot run)."""
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(pki.ca("Lean Root").pem)
    from conftest import cli_modules

    env = {"STORESYNC_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    heavy = ("typer", "click", "rich", "dataclasses", "typing", "cryptography")
    assert cli_modules(["sync", f"pem:{a}", f"pem:{b}"], env, heavy) == (0, [])
    assert b.read_bytes()  # it did sync


def test_one_shot_nss_sync_and_list_import_no_heavy_module(tmp_path, pki):
    """Issue 18: the NSS store took `letter_trust` from the certdata store, which imported
    dataclasses and typing (inspect, ast, dis, tokenize with them: 50 M instructions, 11 % of the
    system roots into a fresh database; it is model's now, and certdata imports neither). A sync
    into a fresh database and `list --json` import neither, nor the CLI's libraries; nor
    contextlib (the locks and the KDF budget are classes) nor weakref (2.9 M and 2.6 M), nor
    base64 (binascii's calls are what it runs) nor importlib (a store's module comes by __import__).
    ctypes stays: the password check of a database never seen decrypts with libcrypto's AES."""
    from conftest import cli_modules
    from test_nss import new_db

    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca("Lean NSS Root").pem)
    env = {"STORESYNC_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    heavy = ("typer", "click", "rich", "dataclasses", "typing", "cryptography", "contextlib", "weakref",
             "base64", "importlib")
    warm, db = new_db(tmp_path / "warm"), new_db(tmp_path / "db")
    cli_modules(["sync", f"pem:{bundle}", f"nss:{warm}"], env, ())  # the root's checks, remembered
    assert cli_modules(["sync", f"pem:{bundle}", f"nss:{db}"], env, heavy, installed=True) == (0, [])
    assert cli_modules(["list", "--json", f"nss:{db}"], env, heavy, installed=True) == (0, [])


def test_one_shot_commands_import_no_pathlib(tmp_path, pki):
    """Issue 18: pathlib (with the urllib.parse and ipaddress it imports) is 18 M instructions,
    7 % of a new JKS from the system bundle: a one-shot sync, list or check keeps its paths as str
    (storesync.fsio). `check` imports cryptography, which imports urllib.parse itself. A write
    quotes the undo command it prints without shlex (0.8 ms)."""
    from conftest import cli_modules
    from test_nss import new_db

    bundle, leaf = tmp_path / "bundle.pem", tmp_path / "leaf.pem"
    root = pki.ca("Pathless Root")
    bundle.write_bytes(root.pem)
    leaf.write_bytes(pki.leaf("pathless.test", root).pem)
    env = {"STORESYNC_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    lean = ("pathlib", "urllib.parse", "shlex")
    for kind, name in (("jks", "new.jks"), ("dir", "dir"), ("nss", "nss"), ("p12", "new.p12")):
        warm, target = (f"{kind}:{new_db(tmp_path / n) if kind == 'nss' else tmp_path / n}" for n in ("warm-" + name, name))
        cli_modules(["sync", f"pem:{bundle}", warm], env, ())  # a first write's checks of the root, remembered
        assert cli_modules(["sync", f"pem:{bundle}", target], env, lean, installed=True) == (0, []), target
        assert cli_modules(["list", "--json", target], env, lean, installed=True) == (0, []), target
    assert cli_modules(["check", str(leaf), "--store", f"pem:{bundle}"], env, ("pathlib",), installed=True) == (0, [])

"""Servers' own configuration, for `check --nginx-conf` and `--apache-conf`: for each TLS server
block that verifies client certificates, the client-CA store, the CRLs and the verify depth
it sets, each with the file and line that set it (check.Rules holds them).

nginx is read with `crossplane` (nginx's config parser in Python; it follows `include`).
Apache's syntax is read by hand: directives, `Include`/`IncludeOptional`, `<VirtualHost>`;
other sections (`<IfModule>`, `<Location>`, ...) count as part of the block around them.
"""

from __future__ import annotations

import glob
import shlex
from pathlib import Path

from storesync.check import UNREADABLE, CheckError, Problem, Rules, server_rules


class Site:
    """One server block that verifies clients: what `check` judges it by."""

    def __init__(self, rules: Rules, ca: Path | None, ca_kind: str = "pem", trusted: Path | None = None,
                 crls: list[Path] | None = None):
        self.rules, self.ca, self.ca_kind, self.trusted = rules, ca, ca_kind, trusted
        self.crls = crls or []

    @property
    def spec(self) -> str:
        return f"{self.ca_kind}:{self.ca}"


def _read_depth(rules, found: dict, server: str, directive: str) -> None:
    """The chain depth a config sets; unset, the server's default is used all the same (--json says so)."""
    if "depth" not in found:
        found["depth"] = {**_setting(directive, [str(rules.depth)], None, None), "default": True}
        return
    try:
        rules.depth = int(found["depth"]["value"])
    except ValueError:
        raise CheckError(f"{server} config {found['depth']['file']}:{found['depth']['line']}: "
                         f"{directive} {found['depth']['value']!r} is not a number") from None


def _setting(directive: str, args: list[str], file: str | None, line: int | None) -> dict:
    return {"directive": directive, "value": " ".join(args), "file": file, "line": line}


# --- nginx -------------------------------------------------------------------------------------

# Settings a server block inherits from `http` unless it sets them itself.
_NGINX = {"ssl_client_certificate": "ca", "ssl_trusted_certificate": "trusted", "ssl_crl": "crl",
          "ssl_verify_depth": "depth", "ssl_verify_client": "verify"}


def nginx_sites(conf: Path) -> list[Site]:
    """The `http` server blocks of an nginx config that verify clients (`ssl_verify_client on`
    or `optional`; `optional_no_ca` verifies nothing). Paths are relative to the config's folder,
    as with `nginx -c`."""
    import crossplane

    if not conf.is_file():
        raise CheckError(f"nginx config {conf}: no such file; name nginx.conf with --nginx-conf")
    payload = crossplane.parse(str(conf), combine=True)
    if payload["errors"]:
        error = payload["errors"][0]
        where = f"{error.get('file') or conf}" + (f":{error['line']}" if error.get("line") else "")
        raise CheckError(f"nginx config {where}: cannot parse it ({error['error']}); nginx -t says more")
    base = conf.resolve().parent
    sites = []
    for http in (d for d in payload["config"][0]["parsed"] if d["directive"] == "http"):
        defaults = _nginx_settings(http["block"])
        for server in (d for d in http["block"] if d["directive"] == "server"):
            found = {**defaults, **_nginx_settings(server["block"])}
            listens = [d["args"] for d in server["block"] if d["directive"] == "listen"]
            tls = any("ssl" in a[1:] for a in listens) or any(
                d["directive"] == "ssl" and d["args"][:1] == ["on"] for d in server["block"])
            verify = found.get("verify", {}).get("value")
            if not tls or verify not in ("on", "optional"):
                continue
            names = next((d["args"] for d in server["block"] if d["directive"] == "server_name"), [])
            block = (f"server {' '.join(names) or '_'} (listen {', '.join(a[0] for a in listens)}) at "
                     f"{server['file']}:{server['line']}")
            rules = server_rules("nginx")
            rules.block, rules.settings = block, found
            _read_depth(rules, found, "nginx", "ssl_verify_depth")
            path = lambda key: base / found[key]["value"] if key in found else None  # noqa: E731
            if "ca" not in found and "trusted" not in found:
                raise CheckError(f"nginx config {server['file']}:{server['line']}: {block} verifies clients "
                                 "but names no ssl_client_certificate or ssl_trusted_certificate")
            sites.append(Site(rules, path("ca") or path("trusted"), "pem",
                              path("trusted") if "ca" in found else None, [path("crl")] if "crl" in found else []))
    return sites


def _nginx_settings(block: list) -> dict:
    return {_NGINX[d["directive"]]: _setting(d["directive"], d["args"], d["file"], d["line"])
            for d in block if d["directive"] in _NGINX}


def nginx_file_problems(site: Site) -> list:
    """What makes nginx refuse to load the client-CA file at all: it reads it with
    SSL_load_client_CA_file, which takes plain `CERTIFICATE` blocks only (measured with nginx
    1.22: `nginx -t` fails, a reload keeps the old configuration, a start fails)."""

    if site.rules.server != "nginx" or "ca" not in site.rules.settings:
        return []  # ssl_trusted_certificate alone: read as a verify store, which takes TRUSTED blocks
    try:
        data = site.ca.read_bytes()
    except OSError:
        return []  # reading the store reports it
    if b"-----BEGIN TRUSTED CERTIFICATE-----" not in data:
        return []
    plain = f"{site.ca}.plain"
    return [Problem(
        UNREADABLE, f"nginx cannot read {site.ca}: {site.rules.where('ca')} must hold plain PEM (BEGIN CERTIFICATE) "
                    "and this file holds TRUSTED CERTIFICATE blocks; nginx -t fails, a reload keeps the old "
                    "configuration, a restart does not start",
        fix=f"storesync sync --mode mirror --purpose client-auth {shlex.quote(site.spec)} "
            f"{shlex.quote('pem:' + plain)} && mv {shlex.quote(plain)} {shlex.quote(str(site.ca))}",
        data={"file": str(site.ca), "fix_note": "rewrites the file as plain PEM with the certificates it trusts "
                                                "for client-auth; then reload nginx (nginx -s reload)"})]


# --- Apache httpd ------------------------------------------------------------------------------

_APACHE = {"sslcacertificatefile": "ca", "sslcacertificatepath": "ca_path", "sslcarevocationfile": "crl",
           "sslcarevocationpath": "crl_path", "sslcarevocationcheck": "crl_check", "sslverifydepth": "depth",
           "sslverifyclient": "verify", "sslengine": "engine"}


def apache_sites(conf: Path) -> list[Site]:
    """The virtual hosts (and the main server) of an Apache config with `SSLEngine on` that
    verify clients (`SSLVerifyClient require` or `optional`). Relative paths are under ServerRoot
    (default: the config file's folder)."""
    if not conf.is_file():
        raise CheckError(f"Apache config {conf}: no such file; name httpd.conf / apache2.conf with --apache-conf")
    state = {"root": conf.resolve().parent}
    main: dict = {}
    hosts: list[tuple[str, dict]] = []
    _apache_read(conf, state, main, hosts, None, 0)
    sites = []
    for block, found in [("main server", main)] + [(b, {**main, **f}) for b, f in hosts]:
        if found.get("engine", {}).get("value", "").lower() != "on":
            continue
        if found.get("verify", {}).get("value", "").lower() not in ("require", "optional"):
            continue
        rules, found = server_rules("apache"), dict(found)
        rules.block, rules.settings = block, found
        check = found.get("crl_check", {}).get("value", "none").lower().split()
        rules.crl = check[0] if check and check[0] in ("chain", "leaf") else "none"
        rules.crl_required = "no_crl_for_cert_ok" not in check[1:]
        _read_depth(rules, found, "Apache", "SSLVerifyDepth")
        path = lambda key: _apache_path(found[key]["value"], state)  # noqa: E731
        if "ca" in found:
            ca, kind = path("ca"), "pem"
        elif "ca_path" in found:
            ca, kind = path("ca_path"), "dir"
        else:
            raise CheckError(f"Apache config: {block} verifies clients but names no SSLCACertificateFile or "
                             "SSLCACertificatePath")
        crls = [path("crl")] if "crl" in found else []
        if "crl_path" in found:
            crls += sorted(p for p in path("crl_path").glob("*.r[0-9]*") if p.is_file())
        sites.append(Site(rules, ca, kind, None, crls))
    return sites


def _apache_path(value: str, state: dict) -> Path:
    path = Path(value)
    return path if path.is_absolute() else state["root"] / path


def _apache_read(conf: Path, state: dict, main: dict, hosts: list, host: dict | None, depth: int) -> dict | None:
    if depth > 16:
        raise CheckError(f"Apache config {conf}: Include nests more than 16 deep (a loop?)")
    try:
        text = conf.read_text(errors="replace")
    except OSError as exc:
        raise CheckError(f"Apache config {conf}: cannot read it ({exc.strerror})") from None
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start, line = number + 1, lines[number]
        number += 1
        while line.endswith("\\") and number < len(lines):  # continuation lines
            line, number = line[:-1] + lines[number], number + 1
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=False, posix=True)
        except ValueError as exc:
            raise CheckError(f"Apache config {conf}:{start}: cannot parse it ({exc})") from None
        name = words[0].lower()
        if name.startswith("</"):
            if name == "</virtualhost>":
                if host is None:
                    raise CheckError(f"Apache config {conf}:{start}: </VirtualHost> without <VirtualHost>")
                host = None
            continue
        if name.startswith("<"):
            if not line.endswith(">"):
                raise CheckError(f"Apache config {conf}:{start}: section {words[0]} is not closed by '>'")
            if name == "<virtualhost":
                if host is not None:
                    raise CheckError(f"Apache config {conf}:{start}: <VirtualHost> inside <VirtualHost>")
                address = " ".join(words[1:]).rstrip(">").strip()
                host = {}
                hosts.append((f"<VirtualHost {address}> at {conf}:{start}", host))
            continue
        if name == "serverroot" and len(words) > 1:
            state["root"] = Path(words[1])
        elif name in ("include", "includeoptional") and len(words) > 1:
            pattern = str(_apache_path(words[1], state))
            matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            for match in matches:
                if Path(match).is_dir():
                    continue
                if not Path(match).exists():
                    if name == "includeoptional":
                        continue
                    raise CheckError(f"Apache config {conf}:{start}: Include {words[1]}: no such file")
                host = _apache_read(Path(match), state, main, hosts, host, depth + 1)
        elif name in _APACHE and len(words) > 1:
            (main if host is None else host)[_APACHE[name]] = _setting(words[0], words[1:], str(conf), start)
    return host

"""`storesync check`: would each store accept a certificate, and if not, why and what to do.

The judging is storesync.check's; this module reads the command line and prints. `run` is the
command (the quick parser in storesync.cli calls it without typer); `declare` puts it on the
typer app. It imports `cryptography`, the store modules and the discovery code inside `run`,
so other commands do not pay for them at start-up.
"""


import sys

from storesync.cli.common import fail, open_and_read, print_json
from storesync.model import EXIT_DIFFERENT, EXIT_ERROR, EXIT_OK, TrustSet

TYPE_CHECKING = False  # typing's, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Optional


def declare(app) -> None:
    from pathlib import Path  # typer reads it here; the quick path (run) takes str paths
    from typing import List, Optional

    import typer

    from storesync.cli.options import PASSWORD_FILE, PYTHON, STATE_DIR, STORES_CONFIG

    @app.command("check")
    def check(
        cert: Path = typer.Argument(..., help="The certificate: PEM or DER; a PEM bundle is leaf first, then intermediates."),
        chain: List[Path] = typer.Option([], "--chain", help="File of extra intermediate certificates (repeatable)."),
        stores: List[str] = typer.Option([], "--store", help="Store to check against (repeatable); default: every store `status` finds."),
        crls: List[Path] = typer.Option([], "--crl", help="CRL file, PEM or DER (repeatable); used only when its signature verifies."),
        purpose: str = typer.Option("client-auth", "--purpose", help="client-auth, server-auth, email or code-signing."),
        at: Optional[str] = typer.Option(None, "--at", help="Check at this ISO time instead of now (e.g. 2026-05-01T12:00:00Z)."),
        name: Optional[str] = typer.Option(None, "--name", help="server-auth: also check that the certificate names this host."),
        server: Optional[str] = typer.Option(None, "--server", help="Judge by this server's rules: openssl (openssl verify, the default), nginx, apache or iis."),
        nginx_conf: Optional[Path] = typer.Option(None, "--nginx-conf", help="nginx.conf: judge each TLS server block that verifies clients by its own settings."),
        apache_conf: Optional[Path] = typer.Option(None, "--apache-conf", help="Apache's config: judge each SSL virtual host that verifies clients by its settings."),
        python: List[str] = PYTHON,
        config: Optional[str] = STORES_CONFIG,
        as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
        password_file: Optional[Path] = PASSWORD_FILE,
        state_dir: Optional[Path] = STATE_DIR,
    ) -> None:
        """Would each store accept CERT, and if not, why and what to do. Exit 0: every store accepts; 1: one refuses; 2: error."""
        # as the quick parser hands them over: repeated options as tuples of words
        run(cert=str(cert), chain=tuple(map(str, chain)), stores=tuple(stores), crls=tuple(map(str, crls)),
            purpose=purpose, at=at, name=name, server=server, nginx_conf=nginx_conf, apache_conf=apache_conf,
            python=tuple(python or ()), config=config, as_json=as_json, password_file=password_file,
            state_dir=state_dir)


def run(cert: str, chain: tuple = (), stores: tuple = (), crls: tuple = (), purpose: str = "client-auth",
        at: "Optional[str]" = None, name: "Optional[str]" = None, server: "Optional[str]" = None,
        nginx_conf: "Optional[Path]" = None, apache_conf: "Optional[Path]" = None, python: tuple = (),
        config: "Optional[str]" = None, as_json: bool = False, password_file: "Optional[Path]" = None,
        state_dir: "Optional[Path]" = None) -> None:
    """Would each store accept CERT, and if not, why and what to do (exit 0, 1 or 2)."""
    from storesync import check as judge
    from storesync import state

    state.set_state_dir(state_dir)
    chain, crls, stores, python = list(chain), list(crls), list(stores), list(python)

    if purpose not in judge.CHECK_PURPOSES:
        fail(f"--purpose must be one of {', '.join(judge.CHECK_PURPOSES)}, not {purpose!r}")
    if nginx_conf and apache_conf:
        fail("--nginx-conf and --apache-conf do not go together: check one server's config at a time")
    conf = "nginx" if nginx_conf else "apache" if apache_conf else None
    if conf and server not in (None, conf):  # a config's server blocks are judged by that server's rules
        fail(f"--server {server} and --{conf}-conf do not go together: the server blocks of an {conf} config are "
             f"judged by {conf}'s rules; leave --server out")
    server = server or "openssl"
    if server not in judge.SERVERS:
        fail(f"--server must be one of {', '.join(judge.SERVERS)}, not {server!r}")
    if name is not None and purpose != "server-auth":
        fail("--name checks a host name, which only --purpose server-auth has")
    try:
        when = judge.parse_time(at)
        certs = judge.load_certificates(cert)
        intermediates = certs[1:] + [c for path in chain for c in judge.load_certificates(path)]
        crl_list = judge.load_crls(crls)
    except judge.CheckError as exc:
        fail(str(exc))
    leaf = certs[0]

    judged = []  # (store spec, rules, CRLs, server block or None)
    if nginx_conf or apache_conf:
        from storesync import servers

        try:
            from pathlib import Path  # servers' (it imports pathlib itself)

            sites = ((servers.nginx_sites(Path(nginx_conf)) if nginx_conf else [])
                     + (servers.apache_sites(Path(apache_conf)) if apache_conf else []))
            judged = [(site.spec, site.rules, judge.load_crls(site.crls), site) for site in sites]
        except judge.CheckError as exc:
            fail(str(exc))
        if not judged:
            fail(f"{nginx_conf or apache_conf}: no TLS server block in it verifies client certificates "
                 "(ssl_verify_client on / SSLVerifyClient require); nothing to check")
    rules = judge.server_rules(server)
    explicit = bool(stores)
    if not explicit and not judged:
        from storesync import discover

        warnings: list[str] = []
        stores = [f.store for f in discover.discover(python, config, warnings)]  # as found: never parsed
        for warning in warnings:
            print(f"storesync: warning: {warning}", file=sys.stderr)
        if not stores:
            fail("found no store on this machine to check against; name one with --store")

    sets, kinds, canonical, plain, readers = {}, {}, {}, {}, {}  # readers: what they trust (`Store.with_fixed`)
    specs = [j[0] for j in judged] + [j.trusted and f"pem:{j.trusted}" for *_, j in judged] + list(stores)
    named_at = {}  # a server block's files, by where its config names them: nginx -t fails on one it cannot read
    for *_, site in judged:
        named_at.setdefault(site.spec, f"{site.rules.block}: {site.rules.where('ca' if 'ca' in site.rules.settings else 'trusted')}")
        if site.trusted:
            named_at.setdefault(f"pem:{site.trusted}", f"{site.rules.block}: {site.rules.where('trusted')}")
    for spec in dict.fromkeys(s for s in specs if s):
        try:
            store, trust_set = open_and_read(spec, password_file, named_at.get(spec))
        except SystemExit:
            if explicit or judged:
                raise  # a store named that cannot be read: its one sentence, and nothing printed after it
            continue
        canonical[spec] = str(store.spec)
        sets[str(store.spec)], kinds[str(store.spec)] = trust_set, store.spec.kind
        # a Java private-key entry's certificate is trusted all the same, but never a fix's source
        readers[str(store.spec)] = store.with_fixed(trust_set)[0]
        if not store.capabilities.purposes:  # its anchors are for its spec's purpose: a fix must name that
            plain[str(store.spec)] = store.spec
    judged += [(spec, rules, crl_list, None) for spec in stores]

    verdicts = []
    for spec, spec_rules, spec_crls, site in judged:
        if spec not in canonical:
            continue
        spec = canonical[spec]
        trust_set = readers[spec]
        trusted = sets.get(canonical.get(f"pem:{site.trusted}")) if site is not None and site.trusted else None
        if trusted is not None:  # nginx verifies with both files; it names only the first to clients
            trust_set = TrustSet([*trust_set.values(), *(e for e in trusted.values() if e.sha256 not in trust_set)])
        verdict = judge.check_store(spec, kinds[spec], trust_set, leaf, intermediates, purpose, when, spec_crls, name,
                                     spec_rules)
        if site is not None:
            from storesync import servers

            verdict.problems = servers.nginx_file_problems(site) + verdict.problems
            if trusted is not None and verdict.chain and verdict.chain[-1] not in [
                    e.cert.x509 for e in sets[spec].values()]:
                verdict.warnings.append(
                    f"the root {judge.short_name(verdict.chain[-1])} is in ssl_trusted_certificate only: nginx does "
                    "not name it to clients, so browsers may not offer this certificate (curl offers it anyway)")
        judge.sync_fix(verdict, spec, sets, kinds, purpose, plain.get(spec))
        verdicts.append(verdict)

    if as_json:
        print_json({
            "certificate": judge.cert_json(leaf),
            "intermediates": [judge.cert_json(c) for c in intermediates],
            "purpose": purpose,
            "server": server,
            "at": judge._iso(when),
            "accepted": bool(verdicts) and all(v.accepted for v in verdicts),
            "stores": [v.to_json() for v in verdicts],
        })
    else:
        print_check(leaf, purpose, when, verdicts)
    if not verdicts:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if all(v.accepted for v in verdicts) else EXIT_DIFFERENT)


def print_check(leaf, purpose: str, when, verdicts) -> None:
    from storesync.check import _iso, short_name

    print(f"{short_name(leaf)}: issued by {leaf.issuer.rfc4514_string()}, valid "
          f"{_iso(leaf.not_valid_before_utc)} to {_iso(leaf.not_valid_after_utc)}")
    print(f"checked for {purpose} at {_iso(when)}")
    for verdict in verdicts:
        print()
        if verdict.rules.block:
            print(f"{verdict.rules.server} {verdict.rules.block}:")
        if verdict.accepted:
            path = " <- ".join(short_name(c) for c in verdict.chain)
            print(f"{verdict.store}: ok ({path})")
        else:
            print(f"{verdict.store}: REFUSED, {verdict.reason}")
            for problem in verdict.problems:
                print(f"  {problem.reason}: {problem.message}")
                if problem.fix:
                    print(f"    fix: {problem.fix}")
                if problem.data.get("fix_note"):
                    print(f"         ({problem.data['fix_note']})")
        names = verdict.data.get("ca_names")
        if names:
            print(f"  acceptable-CA list: {names['bytes']} bytes of names for {names['roots']} roots "
                  f"(Schannel sends about {names['limit']})")
        for warning in verdict.warnings:
            print(f"  warning: {warning}")

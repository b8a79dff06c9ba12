"""`make demo`: sign the example bundle with a fresh dev key and serve a protected demo GraphQL app.

Everything lives in `.demo/` (recreated on every run): a fresh bundle-signing key, the signed example
bundle, a development IdP key and an MDM (device attestation) key with their JWKS files, the
`ig-gate.yaml` that wires them together, and `curl.sh` with ready-made requests that show allow,
step-up and deny. Run `python -m ig_gate.sidecar.demo --help` for options.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from ig_gate.bundles import cli as policy_cli
from ig_gate.middleware import ZeroTrustMiddleware
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.sidecar.demo_app import create_app
from ig_gate.sidecar.devidp import DEFAULT_ISSUER, DevIdP, DevKey

US_IP = "8.8.8.8"  # resolves to US in the embedded database: inside tenant acme's fence
FENCED_IP = "1.1.1.1"  # resolves outside acme's allowed countries (US, DE)
TOKEN_TTL_S = 600  # lifetime of the tokens curl.sh mints on each run

CONFIG_TEMPLATE = """\
# written by `make demo`; every key: docs/config.md (`ig-gate config check` validates this file)
bundle:
  path: dist/policy.tgz
  verification_key: keys/bundle.pub
  require_version: ">=1.0"
identity:
  issuer: {issuer}
  audience: {audience}
  jwks: keys/idp-jwks.json
  cookie: ig_session             # browsers send the token in this cookie on WebSocket connects
device:
  attestation_jwks: keys/mdm-jwks.json
geo:
  database: null
  trusted_proxies: [127.0.0.1/32, "::1/128"]
decision_log:
  path: decisions.jsonl
metrics:
  tenants: [acme, globex]
graphql:
  paths: [/graphql, /graphql/ws]  # every operation on these paths is decided, WebSocket frames included
failure_mode: closed
exclude_paths: [/healthz, /metrics, /ui]
"""


def prepare(workdir: Path, policies: Path, issuer: str = DEFAULT_ISSUER) -> DevIdP:
    """Create keys, build and sign the example bundle, write the config; return the dev IdP."""
    shutil.rmtree(workdir, ignore_errors=True)
    keys = workdir / "keys"
    keys.mkdir(parents=True)
    bundle = workdir / "dist" / "policy.tgz"
    for argv in (
        ["keygen", "--alg", "ES256", "--out", str(keys / "bundle")],
        ["pack", "build", str(policies), "--out", str(bundle), "--version", "1.0.0", "--channel", "dev"],
        ["pack", "sign", str(bundle), "--key", str(keys / "bundle.key")],
        ["pack", "verify", str(bundle), "--key", str(keys / "bundle.pub"), "--require-detached"],
    ):
        if policy_cli.main(argv) != 0:
            raise SystemExit(f"demo: `ig-policy {' '.join(argv)}` failed")
    idp = DevIdP(DevKey.generate("demo-idp-1"), DevKey.generate("demo-mdm-1"), issuer=issuer)
    (keys / "idp-jwks.json").write_text(json.dumps(idp.session_key.jwks(), indent=2))
    (keys / "mdm-jwks.json").write_text(json.dumps(idp.device_key.jwks(), indent=2))
    (keys / "idp.key").write_bytes(idp.session_key.private_pem)
    (keys / "idp.key").chmod(0o600)
    (keys / "mdm.key").write_bytes(idp.device_key.private_pem)  # `ig-gate dev attestation` signs with it
    (keys / "mdm.key").chmod(0o600)
    (workdir / "ig-gate.yaml").write_text(CONFIG_TEMPLATE.format(issuer=idp.issuer, audience=idp.audience))
    return idp


class Minted(str):
    """A curl argument holding `$(token ...)`: rendered in double quotes so the shell mints it at run time."""


def curl_examples(base: str) -> list[tuple[str, list[str]]]:
    """(what it shows, curl argv) pairs covering allow, step-up and deny; tokens are minted when run.

    Each row has its own subject where state could leak between rows or runs: the fenced request from
    Australia would flag its subject for impossible travel (an hour), so it is carol's, not alice's.
    """
    query = json.dumps({"query": "query Me { me { subject tenant risk } }"})
    mutation = json.dumps(
        {"query": 'mutation Update { update(name: "x") { ok } }', "variables": {"name": "x"}}
    )

    def curl(token: str | None, body: str, device: str | None, ip: str | None = US_IP) -> list[str]:
        argv = ["curl", "-s", "-i", f"{base}/graphql", "-H", "Content-Type: application/json"]
        if ip:  # the demo trusts 127.0.0.1 as a proxy; loopback itself has no country
            argv += ["-H", f"X-Forwarded-For: {ip}"]
        if token:
            argv += ["-H", Minted(f"Authorization: Bearer $(token {token})")]
        if device:  # an MDM attests each user's own device; it counts only for its user's session
            argv += ["-H", Minted(f"X-Device-Attestation: $(attestation {device})")]
        return [*argv, "--data", body]

    return [
        ("allow: low-risk session, managed device, from the US",
         curl("--sub alice --risk low", query, "--sub alice")),
        ("step-up (401, RFC 9470): medium-risk session without MFA",
         curl("--sub bob --risk medium", mutation, "--sub bob")),
        ("allow: the same medium-risk user after step-up (acr=mfa)",
         curl("--sub bob --risk medium --acr mfa", mutation, "--sub bob")),
        ("step-up (401): a write with alice's device attestation by bob",
         curl("--sub bob --risk low", mutation, "--sub alice")),
        ("deny (403): high-risk session", curl("--sub mallory --risk high", query, "--sub mallory")),
        ("deny (403): jailbroken device",
         curl("--sub dave --risk low", query, "--sub dave --posture jailbroken")),
        ("deny (403): outside the tenant's allowed countries",
         curl("--sub carol --risk low", query, "--sub carol", ip=FENCED_IP)),
        ("deny (403): no X-Forwarded-For, so no country (geo_unknown)",
         curl("--sub erin --risk low", query, "--sub erin", ip=None)),
        ("401: no token", curl(None, query, None)),
        ("metrics", ["curl", "-s", f"{base}/metrics"]),
    ]


def metrics_endpoint(metrics: GateMetrics) -> Callable[[Request], Awaitable[Response]]:
    """A route serving the gate's Prometheus metrics (excluded from enforcement in the demo config)."""

    async def endpoint(_: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return endpoint


def render(argv: list[str]) -> str:
    """One shell command line; `Minted` arguments in double quotes (their `$(...)` runs), the rest quoted."""
    return " ".join(f'"{arg}"' if isinstance(arg, Minted) else shlex.quote(arg) for arg in argv)


def write_curl_script(path: Path, config: Path, examples: list[tuple[str, list[str]]]) -> None:
    """curl.sh: every run mints fresh tokens (`ig-gate dev token`, TOKEN_TTL_S) with the demo keys."""
    dev = f"{shlex.quote(sys.executable)} -m ig_gate.sidecar.dev_cli"
    lines = [
        "#!/bin/sh",
        "# requests against the demo; run: sh .demo/curl.sh",
        f"# tokens are minted on every run and live {TOKEN_TTL_S // 60} minutes (ig-gate dev token --help)",
        "set -e",
        f"CONFIG={shlex.quote(str(config.resolve()))}",
        f'token() {{ {dev} token --config "$CONFIG" --ttl {TOKEN_TTL_S} "$@"; }}',
        f'attestation() {{ {dev} attestation --config "$CONFIG" --ttl {TOKEN_TTL_S} "$@"; }}',
        "",
    ]
    for what, argv in examples:
        lines += [f"echo {shlex.quote('### ' + what)}", render(argv), "echo; echo", ""]
    path.write_text("\n".join(lines))
    path.chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-gate-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--idp-port", type=int, default=8081, help="the demo OpenID provider's port")
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--policies", type=Path, default=Path("policies"))
    parser.add_argument("--prepare-only", action="store_true", help="write .demo/ and exit without serving")
    args = parser.parse_args(argv)
    if not args.policies.is_dir():
        parser.error(f"--policies {args.policies}: not a directory (run from the repository root)")
    idp = prepare(args.workdir, args.policies, issuer=f"http://{args.host}:{args.idp_port}")
    base = f"http://{args.host}:{args.port}"
    examples = curl_examples(base)
    write_curl_script(args.workdir / "curl.sh", args.workdir / "ig-gate.yaml", examples)
    print(f"\nig-gate demo: signed bundle {args.workdir}/dist/policy.tgz, config {args.workdir}/ig-gate.yaml")
    print(f"Protected demo GraphQL service on {base}/graphql; all examples: sh {args.workdir}/curl.sh")
    print(f"Tokens: minted on every run of curl.sh, valid {TOKEN_TTL_S // 60} minutes; mint more with")
    print(f"  ig-gate dev token --config {args.workdir}/ig-gate.yaml --sub bob --risk medium --acr mfa")
    print(f"In a browser: {base}/ui (paste a token from `ig-gate dev token`)\n")
    sys.stdout.flush()
    if args.prepare_only:
        return 0
    from ig_gate.sidecar.oidc_provider import Provider, serving  # authlib and flask only when serving

    print(f"Sign in at {base}/ui: the demo OpenID provider {idp.issuer} knows alice (low risk), bob (medium:")
    print("  the gate asks for a second factor, a TOTP code) and mallory (high); passwords = user names;")
    print("  bob's current code:")
    print(f"  {sys.executable} -c \"from ig_gate.sidecar.oidc_provider import DEMO_USERS as u; "
          "print(u['bob'].totp().now())\"\n")
    sys.stdout.flush()
    provider = Provider(idp.issuer, idp.session_key, idp.device_key, (f"{base}/ui",), idp.audience)
    app = create_app(oidc_issuer=idp.issuer)
    protected = ZeroTrustMiddleware(app, config=args.workdir / "ig-gate.yaml")
    app.add_route("/metrics", metrics_endpoint(protected.gate.metrics))
    with serving(provider, args.host, args.idp_port):
        # proxy_headers off: ig-gate alone decides which forwarded headers to trust (geo.trusted_proxies)
        uvicorn.run(protected, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

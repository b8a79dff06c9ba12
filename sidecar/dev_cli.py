"""`ig-gate dev token` / `ig-gate dev attestation`: mint development tokens with the demo's keys.

For `make demo` and local experiments only. The issuer and audience come from the config (`.demo/ig-gate.yaml`
by default), the signing keys from `keys/idp.key` and `keys/mdm.key` beside it, their key ids from the JWKS
files the config names; the config is read as the gate reads it (load_settings, `IG_GATE_*` too).
Tokens are stamped with the current time (`auth_time` too: a fresh login), so a
step-up token minted now satisfies `max_age` now. Prints the token alone on stdout.

This module is also runnable on its own (`python -m ig_gate.sidecar.dev_cli token ...`, what the demo's
curl.sh calls): the same command without importing the server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ig_gate.errors import IgGateError, describe
from ig_gate.middleware.settings import ConfigError, load_settings
from ig_gate.sidecar.devidp import DevIdP, DevKey

DEFAULT_CONFIG = Path(".demo/ig-gate.yaml")
DEFAULT_TTL_S = 600


class DevTokenError(IgGateError):
    """The demo config or keys cannot be read."""

    label = "cannot mint a development token"


def _key(path: Path, jwks_path: Path) -> DevKey:
    """The private key at `path` with the key id its JWKS file publishes."""
    try:
        keys = json.loads(jwks_path.read_text())["keys"]
        return DevKey.load(path, str(keys[0]["kid"]))
    except OSError as exc:
        raise DevTokenError(f"{exc.filename}: {exc.strerror} (run `make demo` first)") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise DevTokenError(f"{jwks_path}: not a JWKS document with a key id") from None


def load_idp(config_path: Path) -> DevIdP:
    """A DevIdP over the demo keys beside `config_path`, with the issuer and audience the gate reads from it
    (load_settings: the file, then `IG_GATE_*` variables)."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise DevTokenError(f"{exc} (run `make demo` first)") from None
    identity, device = settings.identity, settings.device
    if not identity.jwks or not device.attestation_jwks:
        raise DevTokenError(f"{config_path}: identity.jwks and device.attestation_jwks must name JWKS files")
    base = config_path.parent
    session_key = _key(base / "keys" / "idp.key", Path(identity.jwks))
    device_key = _key(base / "keys" / "mdm.key", Path(device.attestation_jwks))
    return DevIdP(session_key, device_key, identity.issuer, identity.audience)


def _token(args: argparse.Namespace) -> str:
    idp = load_idp(args.config)
    amr = args.amr.split(",") if args.amr else (["mfa"] if args.acr == "mfa" else None)
    return idp.session_token(
        args.sub, args.tenant, args.risk, acr=args.acr, amr=amr, lifetime_s=args.ttl,
        session_id=args.session_id,
    )


def _attestation(args: argparse.Namespace) -> str:
    idp = load_idp(args.config)
    return idp.attestation(args.posture, args.device or f"{args.sub}-laptop", args.ttl, subject=args.sub)


def _run(mint: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            print(mint(args))
        except IgGateError as exc:
            print(f"ig-gate: {describe(exc)}", file=sys.stderr)
            return 1
        return 0

    return handler


def _ttl(value: str) -> int:
    seconds = int(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be a positive number of seconds")
    return seconds


def register_dev(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate dev token|attestation`."""
    dev = subparsers.add_parser("dev", help="development helpers (the demo's keys)")
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    common.add_argument("--sub", default="alice", help="the subject (default: alice)")
    common.add_argument("--ttl", type=_ttl, default=DEFAULT_TTL_S, help=f"seconds (default {DEFAULT_TTL_S})")
    token = actions.add_parser(
        "token", parents=[common], help="mint a session token signed with the demo IdP key",
        description="A bearer token from the demo IdP (keys/idp.key beside --config; iss and aud from it), "
        "issued now with auth_time now.",
    )
    token.add_argument("--risk", default="low", help="session risk claim: low, medium, high")
    token.add_argument("--acr", help="authentication context (mfa: a fresh second factor)")
    token.add_argument("--amr", help="comma-separated methods (default: mfa with --acr mfa)")
    token.add_argument("--tenant", default="acme")
    token.add_argument("--session-id", help="the sid claim (default: SUB-session)")
    token.set_defaults(handler=_run(_token))
    attestation = actions.add_parser(
        "attestation", parents=[common], help="mint a device attestation signed with the demo MDM key",
    )
    attestation.add_argument("--posture", default="managed", help="managed, unmanaged, untrusted, jailbroken")
    attestation.add_argument("--device", help="device id (default: SUB-laptop)")
    attestation.set_defaults(handler=_run(_attestation))


def main(argv: Sequence[str] | None = None) -> int:
    """`ig-gate dev ...` without the rest of `ig-gate` (and its imports)."""
    parser = argparse.ArgumentParser(prog="ig-gate")
    register_dev(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(["dev", *(argv if argv is not None else sys.argv[1:])])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

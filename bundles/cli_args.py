"""What every `ig-policy` command shares: the usage error, input files, and the key and pin options.

bundles/cli.py (pack, eval, test, keygen) and bundles/cli_registry.py (publish, promote, pull, channels)
both import from here, so neither imports the other's module to reach them.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from ig_gate.bundles.errors import PinError
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.signing import SIGN_ALGORITHMS, VerificationKey
from ig_gate.errors import IgGateError

PROG = "ig-policy"


class UsageError(IgGateError):
    """Bad invocation: wrong arguments, missing input files, refusing to overwrite."""

    label = "usage error"


def package_version() -> str:
    """The installed ig-gate distribution's version (`--version` of both CLIs)."""
    try:
        return metadata.version("ig-gate")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def read(path: str | Path, what: str) -> bytes:
    """Read an input file; a missing one (or a directory) is a usage error (exit 2)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path}: is a directory") from None


def add_key_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--key/--alg/--key-id/--scope."""
    parser.add_argument("--key", required=required, help="PEM public key, or the HS256 shared-secret file")
    parser.add_argument("--alg", choices=SIGN_ALGORITHMS, help="signature algorithm (default: from the key)")
    parser.add_argument("--key-id", help="key id to report (OPA: a configured id wins over the token's)")
    parser.add_argument("--scope", help="required signature scope")


def verification_key(args: argparse.Namespace) -> VerificationKey | None:
    """The key from --key/--alg/--key-id/--scope (see `add_key_options`); None without --key."""
    if args.key is None:
        if args.key_id or args.scope or args.alg:
            raise UsageError("--alg/--key-id/--scope need --key")
        return None
    read(args.key, "verification key")
    return VerificationKey.from_file(args.key, alg=args.alg, key_id=args.key_id, scope=args.scope)


def pin_from_args(args: argparse.Namespace) -> Pin:
    """The pin from --require-version/--require-digest; a malformed pin is a usage error (exit 2)."""
    try:
        return Pin(args.require_version, frozenset(args.require_digest or ()))
    except PinError as exc:
        raise UsageError(str(exc)) from None

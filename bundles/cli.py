"""`ig-policy`: build, sign, verify, inspect and evaluate policy bundles.

Exit codes: 0 ok, 1 verification/validation failure, 2 usage error. Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from packaging.version import InvalidVersion, Version

from ig_gate.bundles import cli_registry
from ig_gate.bundles.archive import SIGNATURES, Bundle, build_bundle, read_bundle
from ig_gate.bundles.cli_args import (
    PROG,
    UsageError,
    add_key_options,
    package_version,
    pin_from_args,
    read,
    verification_key,
)
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.errors import BundleError, BundleFormatError, PolicyCompileError, SignatureError
from ig_gate.bundles.fsutil import write_atomic
from ig_gate.bundles.keys import generate_key_pair
from ig_gate.bundles.manifest import Expiry, expiry_instant, parse_expires
from ig_gate.bundles.signing import SIGN_ALGORITHMS, VerificationKey, decode_unverified, sign_bundle
from ig_gate.bundles.verify import SigstoreOptions, VerifiedBundle, VerifyOptions, verify_bundle
from ig_gate.errors import IgGateError, describe

DEFAULT_QUERY = "data.ig.zt.decision"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed with the usage)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _write(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """write_atomic, with a failure named by the file the user asked for (not the temp file)."""
    try:
        write_atomic(Path(path), data, mode)
    except OSError as exc:
        raise BundleError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _expires_arg(value: str) -> Expiry:
    try:
        return parse_expires(value)
    except BundleFormatError:
        raise argparse.ArgumentTypeError(f"{value!r} is not YYYY-MM-DD or an ISO 8601 datetime") from None


def _version_arg(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion:
        raise argparse.ArgumentTypeError(f"{value!r} is not a PEP 440 version") from None
    return value


def _emit(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


def _sig_path(archive: str | Path) -> Path:
    return Path(f"{archive}.sig")


# --- keygen -----------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    existing = [str(p) for p in (key_path, pub_path) if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{existing[0]} exists (use --force to overwrite)")
    pair = generate_key_pair(args.alg)
    _write(key_path, pair.private_pem, mode=0o600)
    _write(pub_path, pair.public_pem)
    return _emit({"alg": args.alg, "private_key": str(key_path), "public_key": str(pub_path)})


# --- pack build / sign --------------------------------------------------------------------------------


def _check_expires(expires: Expiry | None, force: bool) -> None:
    """An `--expires` already past: a warning with --force, else refused (nothing would load the bundle)."""
    if expires is None or expiry_instant(expires) > dt.datetime.now(dt.UTC):
        return
    message = f"--expires {expires.isoformat()} is in the past: every verifier will reject this bundle"
    if not force:
        raise BundleError(f"{message} (use --force to build it anyway)")
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    from ig_gate.bundles.engine import Engine  # the Rego engine is only needed here

    if not Path(args.src).is_dir():
        raise UsageError(f"bundle source {args.src}: not a directory")
    _check_expires(args.expires, args.force)
    bundle = build_bundle(
        Path(args.src),
        version=args.version,
        expires=args.expires,
        channel=args.channel,
        revision=args.revision,
    )
    Engine.from_bundle(bundle)  # every module parses and compiles, or nothing is written (file:line)
    _write(args.out, bundle.archive)
    return _emit(
        {
            "out": args.out,
            "digest": bundle.digest,
            "version": bundle.manifest.version,
            "revision": bundle.manifest.revision,
            "files": sorted(bundle.files),
        }
    )


def _private_key_alg(pem: bytes) -> str:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"signing key is not a PEM private key ({exc}); HS256 needs --alg HS256") from None
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"


def cmd_sign(args: argparse.Namespace) -> int:
    archive = read(args.file, "bundle")
    key_material = read(args.key, "signing key")
    alg = args.alg or _private_key_alg(key_material)
    if alg == "HS256":
        key_material = key_material.removesuffix(b"\n").removesuffix(b"\r")
    signed = sign_bundle(read_bundle(archive), key_material, alg=alg, key_id=args.key_id, scope=args.scope)
    sig_path = _sig_path(args.file)
    detached = None if alg == "HS256" else sign_blob(signed.archive, key_material)
    _write(args.file, signed.archive)
    if detached is not None:
        _write(sig_path, detached + b"\n")
    else:
        sig_path.unlink(missing_ok=True)  # a stale detached signature would no longer match
    detached_path = str(sig_path) if detached else None
    return _emit({"signed": args.file, "digest": signed.digest, "alg": alg, "detached": detached_path})


# --- pack verify / eval -------------------------------------------------------------------------------


def _sigstore_options(args: argparse.Namespace) -> SigstoreOptions | None:
    extras = (args.trusted_root, args.identity, args.issuer)
    if args.sigstore_bundle is None:
        if any(extras):
            raise UsageError("--trusted-root/--identity/--issuer need --sigstore-bundle")
        return None
    if not all(extras):
        raise UsageError("--sigstore-bundle needs --trusted-root, --identity and --issuer")
    return SigstoreOptions(
        read(args.sigstore_bundle, "sigstore bundle"),
        read(args.trusted_root, "trusted root"),
        identity=args.identity,
        issuer=args.issuer,
    )


def _detached_signature(
    args: argparse.Namespace, key: VerificationKey | None, detached_key: bytes | None
) -> bytes | None:
    """FILE.sig, when there is a public key to check it with or it is required; else None."""
    sig_path = _sig_path(args.file)
    public_key = detached_key is not None or (key is not None and key.alg != "HS256")
    return sig_path.read_bytes() if sig_path.is_file() and (public_key or args.require_detached) else None


def _verify(args: argparse.Namespace, archive: bytes, *, require_trust: bool) -> tuple[VerifiedBundle, bool]:
    """verify_bundle with the options from the command line; also says whether FILE.sig was checked."""
    key = verification_key(args)
    sigstore = _sigstore_options(args)
    if require_trust and key is None and sigstore is None:
        raise UsageError("nothing to verify against: give --key and/or --sigstore-bundle")
    detached_key = read(args.detached_key, "detached key") if args.detached_key else None
    detached = _detached_signature(args, key, detached_key)
    options = VerifyOptions(
        key=key,
        pin=pin_from_args(args),
        detached_signature=detached,
        detached_key_pem=detached_key,
        require_detached=args.require_detached,
        sigstore=sigstore,
    )
    return verify_bundle(archive, options), detached is not None


def cmd_verify(args: argparse.Namespace) -> int:
    verified, detached_checked = _verify(args, read(args.file, "bundle"), require_trust=True)
    manifest = verified.bundle.manifest
    return _emit(
        {
            "version": verified.version,
            "revision": verified.revision,
            "digest": verified.digest,
            "files": len(verified.bundle.files),
            "key_id": verified.signature.key_id if verified.signature else None,
            "channel": manifest.channel,
            "expires": manifest.expires.isoformat() if manifest.expires else None,
            "detached": detached_checked,
            "sigstore": args.sigstore_bundle is not None,
        }
    )


def _load_input(path: str) -> Any:
    raw = sys.stdin.buffer.read() if path == "-" else read(path, "input")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"input {path}: invalid JSON ({exc})") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from ig_gate.bundles.engine import Engine  # the Rego engine is only needed here

    input_doc = _load_input(args.input)
    verified, _ = _verify(args, read(args.file, "bundle"), require_trust=False)
    bundle = verified.bundle
    if args.explain:
        from ig_gate.bundles.explain import explain

        report = explain(bundle.modules, bundle.data, args.query, input_doc)
        result = report["result"]
    else:
        result = report = Engine.from_bundle(bundle).evaluate(args.query, input_doc)
    if result is None:
        raise BundleError(f"{args.query} is undefined for this input")
    return _emit(report)


# --- pack inspect / test ------------------------------------------------------------------------------


def _unverified_claims(bundle: Bundle) -> dict[str, Any] | None:
    """Header and payload summary of the (unverified) JWS, for display only."""
    document = bundle.signatures_json
    if document is None:
        return None
    tokens = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(tokens, list) or len(tokens) != 1:
        return {"verified": False, "error": "expected exactly one JWS"}
    try:
        header, payload, _ = decode_unverified(tokens[0])
    except SignatureError as exc:
        return {"verified": False, "error": str(exc)}
    files = payload.get("files")
    return {
        "verified": False,
        "alg": header.get("alg"),
        "kid": header.get("kid"),
        "files": len(files) if isinstance(files, list) else None,
        **{k: payload.get(k) for k in ("keyid", "scope", "iat", "iss")},
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    import hashlib

    bundle = read_bundle(read(args.file, "bundle"))
    return _emit(
        {
            "digest": bundle.digest,
            "size": len(bundle.archive),
            "manifest": bundle.manifest.to_json(),
            "files": [
                {"name": name, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                for name, body in sorted(bundle.files.items())
                if name != SIGNATURES
            ],
            "signature": _unverified_claims(bundle),
            "detached_signature": _sig_path(args.file).is_file(),
        }
    )


def cmd_test(args: argparse.Namespace) -> int:
    from ig_gate.bundles.engine import run_rego_tests  # the Rego engine is only needed here

    source = Path(args.source)
    bundle = build_bundle(source) if source.is_dir() else read_bundle(read(source, "bundle"))
    results = run_rego_tests(bundle.modules, bundle.data)
    failed = [r for r in results if not r.passed]
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'} {result.name}")
    print(f"{len(results) - len(failed)}/{len(results)} passed")
    if failed:
        raise BundleError(f"{len(failed)} of {len(results)} Rego tests failed (first: {failed[0].name})")
    if not results:
        raise BundleError(f"{source}: no Rego tests found (rules named test_* in *_test.rego)")
    return 0


# --- parser -------------------------------------------------------------------------------------------


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    add_key_options(parser, required=False)
    parser.add_argument("--require-version", metavar="SPEC", help='PEP 440 specifiers, e.g. ">=2.0,<3"')
    parser.add_argument("--require-digest", action="append", metavar="sha256:HEX", help="repeatable")
    parser.add_argument("--require-detached", action="store_true", help="FILE.sig must exist and verify")
    parser.add_argument("--detached-key", help="public key for FILE.sig (default: --key)")
    parser.add_argument("--sigstore-bundle", help="keyless Sigstore bundle (.sigstore.json) for FILE")
    parser.add_argument("--trusted-root", help="Sigstore trusted_root.json")
    parser.add_argument("--identity", help="expected certificate identity (SAN)")
    parser.add_argument("--issuer", help="expected OIDC issuer")


def build_parser() -> argparse.ArgumentParser:
    """The full `ig-policy` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Build, sign, verify and evaluate OPA policy bundles.",
        epilog="Exit codes: 0 ok, 1 verification or validation failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="generate a signing key pair")
    keygen.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")
    keygen.add_argument("--out", required=True, help="PREFIX: writes PREFIX.key (0600) and PREFIX.pub")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.set_defaults(func=cmd_keygen)

    pack = commands.add_parser("pack", help="bundle archives").add_subparsers(
        dest="pack_command", required=True, metavar="ACTION"
    )
    build = pack.add_parser(
        "build",
        help="build a deterministic bundle from a source directory",
        description="Packs every *.rego (tests included, as `opa build` does), data.json, data.yaml and a "
        "base .manifest; hidden directories are skipped. The manifest declares each .rego with its sha256.",
    )
    build.add_argument("src", metavar="SRC_DIR", help="policy source directory (e.g. policies/)")
    build.add_argument("--out", required=True, metavar="FILE.tgz", help="archive to write (atomically)")
    build.add_argument("--version", type=_version_arg, help="PEP 440 bundle version (e.g. 2.1.0)")
    build.add_argument(
        "--expires", type=_expires_arg, help="YYYY-MM-DD (end of that day UTC) or an ISO 8601 datetime"
    )
    build.add_argument("--channel", help="release channel recorded in the manifest (dev, staging, prod)")
    build.add_argument("--revision", help="OPA revision (default: VERSION+content hash, or the content hash)")
    build.add_argument("--force", action="store_true", help="build even when --expires is in the past")
    build.set_defaults(func=cmd_build)

    sign = pack.add_parser("sign", help="add .signatures.json (rewrites the archive) and FILE.sig")
    sign.add_argument("file", metavar="FILE.tgz")
    sign.add_argument("--key", required=True, help="PKCS#8 PEM private key, or the HS256 shared-secret file")
    sign.add_argument("--alg", choices=SIGN_ALGORITHMS, help="default: ES256 for EC keys, RS256 for RSA keys")
    sign.add_argument("--key-id", help="key id for the JWS header (kid) and payload (keyid)")
    sign.add_argument("--scope", help="signature scope that verifiers may require")
    sign.set_defaults(func=cmd_sign)

    verify = pack.add_parser("verify", help="verify signature(s), pins and expiry; print a JSON summary")
    verify.add_argument("file", metavar="FILE.tgz")
    _add_trust_options(verify)
    verify.set_defaults(func=cmd_verify)

    inspect = pack.add_parser("inspect", help="manifest, files and (unverified) signature summary as JSON")
    inspect.add_argument("file", metavar="FILE.tgz")
    inspect.set_defaults(func=cmd_inspect)

    evaluate = commands.add_parser("eval", help="evaluate a query against a bundle; print the result JSON")
    evaluate.add_argument("file", metavar="FILE.tgz", help="bundle (verified first when --key is given)")
    evaluate.add_argument("--input", required=True, help="input JSON file ('-' for stdin)")
    evaluate.add_argument("--query", default=DEFAULT_QUERY, help=f"Rego query (default: {DEFAULT_QUERY})")
    evaluate.add_argument(
        "--explain", action="store_true",
        help="also show which reason rules (partial-set rules of the query's package) fired, file:line",
    )
    _add_trust_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    test = commands.add_parser("test", help="run the Rego unit tests of a source directory or bundle")
    test.add_argument("source", metavar="SRC_DIR|FILE.tgz")
    test.set_defaults(func=cmd_test)

    cli_registry.register(commands)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ig-policy`; returns the exit code (0 ok, 1 failure, 2 usage)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except UsageError as exc:
        return _fail(describe(exc), 2)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stay quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except PolicyCompileError as exc:  # one line, then regorus's whole report (source line and caret)
        code = _fail(describe(exc), 1)
        if exc.excerpt:
            print(exc.excerpt, file=sys.stderr)
        return code
    except (IgGateError, OSError) as exc:  # one line, never a Python class name
        return _fail(describe(exc), 1)
    except Exception as exc:  # never a traceback
        return _fail(f"unexpected error: {describe(exc)}", 1)


if __name__ == "__main__":
    sys.exit(main())

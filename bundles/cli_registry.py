"""`ig-policy publish | promote | pull | channels`: bundles in an OCI registry, one tag per channel.

Every command that moves or writes a bundle verifies it first with `--key` (publish refuses an unsigned
or unverifiable bundle, promote refuses a source that does not verify, pull verifies before writing).
Errors raise BundleError subclasses (exit 1) or cli.UsageError (exit 2); bundles/cli.py reports them
in one stderr line. The key options are `pack verify`'s (`--key`, `--alg`, `--key-id`, `--scope`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ig_gate.bundles.archive import read_bundle
from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.fsutil import write_atomic
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.registry import (
    Artifact,
    RegistryClient,
    check_digest,
    check_repository,
    check_tag,
    verify_artifact,
)
from ig_gate.bundles.signing import VERIFY_ALGORITHMS, VerificationKey
from ig_gate.bundles.verify import VerifyOptions

DEFAULT_CHANNELS = ("dev", "staging", "prod")

def _argtype(check: Callable[[str], str], name: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


repository_arg = _argtype(check_repository, "repository")
tag_arg = _argtype(check_tag, "channel")
digest_arg = _argtype(check_digest, "digest")


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", required=True, metavar="HOST:PORT", help="OCI registry (HTTPS default)")
    parser.add_argument("--repo", required=True, type=repository_arg, metavar="NAME",
                        help="repository, e.g. policies/gate")
    parser.add_argument("--plain-http", action="store_true", help="plain HTTP (only for a loopback registry)")


def _trust_arguments(parser: argparse.ArgumentParser) -> None:
    """`pack verify`'s key and pin options (Sigstore bundles do not travel in the registry artifact)."""
    parser.add_argument("--key", required=True, help="PEM public key, or the HS256 shared-secret file")
    parser.add_argument("--alg", choices=VERIFY_ALGORITHMS, help="signature algorithm (default: from key)")
    parser.add_argument("--key-id", help="key id to report (OPA: a configured id wins over the token's)")
    parser.add_argument("--scope", help="required signature scope")
    parser.add_argument("--require-version", metavar="SPEC", help='PEP 440 specifiers, e.g. ">=2.0,<3"')
    parser.add_argument("--require-digest", action="append", metavar="sha256:HEX",
                        help="allowed bundle (archive) digest; repeatable")
    parser.add_argument("--require-detached", action="store_true",
                        help="the artifact must carry a detached signature")
    parser.add_argument("--detached-key", help="public key for the detached signature (default: --key)")


def client_from_args(args: argparse.Namespace) -> RegistryClient:
    """A registry client for --registry/--plain-http; credentials from env or the Docker config."""
    try:
        return RegistryClient(args.registry, plain_http=args.plain_http)
    except ValueError as exc:
        raise BundleError(str(exc)) from None


def _summary(digest: str, verified_archive: bytes) -> dict:
    manifest = read_bundle(verified_archive).manifest
    return {"digest": digest, "version": manifest.version, "revision": manifest.revision}


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def _read(path: str | Path, what: str) -> bytes:
    """Read an input file; a missing one is a usage error (exit 2), as in `pack verify`."""
    from ig_gate.bundles.cli import UsageError  # imported late: cli.py imports this module

    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{what} {path}: no such file") from None


def _options(args: argparse.Namespace) -> VerifyOptions:
    """VerifyOptions from the trust arguments (the detached signature comes from the artifact)."""
    _read(args.key, "verification key")
    return VerifyOptions(
        key=VerificationKey.from_file(args.key, alg=args.alg, key_id=args.key_id, scope=args.scope),
        pin=Pin(args.require_version, frozenset(args.require_digest or ())),
        detached_key_pem=_read(args.detached_key, "detached key") if args.detached_key else None,
        require_detached=args.require_detached,
    )


def cmd_publish(args: argparse.Namespace) -> int:
    """Verify FILE (and FILE.sig, if present) with --key, push it, point --channel at it."""
    options = _options(args)
    archive = _read(args.file, "bundle")
    sig_path = Path(args.signature) if args.signature else Path(f"{args.file}.sig")
    signature = _read(sig_path, "detached signature") if args.signature or sig_path.is_file() else None
    verified = verify_artifact(archive, signature, options)
    annotations = {"org.opencontainers.image.revision": verified.revision}
    if verified.version is not None:
        annotations["org.opencontainers.image.version"] = verified.version
    digest = client_from_args(args).push(args.repo, args.channel, archive, signature, annotations)
    _print({**_summary(digest, archive), "channel": args.channel, "bundle_digest": verified.digest})
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Point --to at the manifest --from points at (same digest), after verifying it."""
    options = _options(args)
    client = client_from_args(args)
    artifact = client.fetch_tag(args.repo, args.source)
    verify_artifact(artifact.archive, artifact.signature, options)
    client.tag(args.repo, artifact.digest, args.target)
    _print({**_summary(artifact.digest, artifact.archive), "from": args.source, "to": args.target})
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch by channel or digest, verify, then write --out (and --out.sig) atomically."""
    options = _options(args)
    client = client_from_args(args)
    artifact: Artifact = (client.fetch(args.repo, args.digest) if args.digest
                          else client.fetch_tag(args.repo, args.channel))
    verify_artifact(artifact.archive, artifact.signature, options)
    out = Path(args.out)
    try:
        write_atomic(out, artifact.archive)
        if artifact.signature is not None:
            write_atomic(Path(f"{out}.sig"), artifact.signature)
    except OSError as exc:
        raise BundleError(f"{out}: cannot write ({exc.strerror})") from None
    _print({**_summary(artifact.digest, artifact.archive), "out": str(out)})
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    """Print {channel: {digest, version, revision} | null} as JSON (read from each bundle's .manifest)."""
    client = client_from_args(args)
    listing: dict[str, dict | None] = {}
    for channel in args.channel or DEFAULT_CHANNELS:
        digest = client.resolve(args.repo, channel)
        if digest is None:
            listing[channel] = None
        else:
            listing[channel] = _summary(digest, client.fetch(args.repo, digest).archive)
    sys.stdout.write(json.dumps(listing, indent=2) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add publish, promote, pull and channels to the `ig-policy` parser (called by bundles/cli.py)."""
    publish = subparsers.add_parser("publish", help="verify a signed bundle and push it to a channel")
    publish.add_argument("file", metavar="FILE.tgz")
    publish.add_argument("--signature", metavar="FILE.sig", help="detached signature (default: FILE.tgz.sig)")
    publish.add_argument("--channel", required=True, type=tag_arg)
    _registry_arguments(publish)
    _trust_arguments(publish)
    publish.set_defaults(func=cmd_publish)

    promote = subparsers.add_parser("promote", help="point one channel at the bundle another channel has")
    promote.add_argument("--from", dest="source", required=True, type=tag_arg, metavar="CHANNEL")
    promote.add_argument("--to", dest="target", required=True, type=tag_arg, metavar="CHANNEL")
    _registry_arguments(promote)
    _trust_arguments(promote)
    promote.set_defaults(func=cmd_promote)

    pull = subparsers.add_parser("pull", help="download and verify a bundle, then write it")
    which = pull.add_mutually_exclusive_group(required=True)
    which.add_argument("--channel", type=tag_arg)
    which.add_argument("--digest", type=digest_arg, help="OCI manifest digest (as `channels` prints)")
    pull.add_argument("--out", required=True, metavar="FILE")
    _registry_arguments(pull)
    _trust_arguments(pull)
    pull.set_defaults(func=cmd_pull)

    channels = subparsers.add_parser("channels", help="show what each channel points at (JSON)")
    channels.add_argument("--channel", action="append", type=tag_arg, help="channel to show (repeatable)")
    _registry_arguments(channels)
    channels.set_defaults(func=cmd_channels)

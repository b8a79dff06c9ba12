"""`ig-policy publish | promote | pull | channels`: bundles in an OCI registry, one tag per channel.

Every command that moves or writes a bundle verifies it first with `--key` (publish refuses an unsigned
or unverifiable bundle, promote refuses a source that does not verify, pull verifies before writing).
Errors raise BundleError subclasses (exit 1) or cli_args.UsageError (exit 2); bundles/cli.py reports them
in one stderr line. The key and pin options are `pack verify`'s (bundles/cli_args.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ig_gate.bundles.archive import read_bundle
from ig_gate.bundles.cli_args import add_key_options, pin_from_args, read, verification_key
from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.fsutil import write_atomic
from ig_gate.bundles.registry import (
    Artifact,
    RegistryClient,
    check_digest,
    check_repository,
    check_tag,
)
from ig_gate.bundles.verify import VerifyOptions, verify_artifact

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
    add_key_options(parser, required=True)
    parser.add_argument("--require-version", metavar="SPEC", help='PEP 440 specifiers, e.g. ">=2.0,<3"')
    parser.add_argument("--require-digest", action="append", metavar="sha256:HEX",
                        help="allowed bundle (archive) digest; repeatable")
    parser.add_argument("--require-detached", action="store_true",
                        help="the artifact must carry a detached signature")
    parser.add_argument("--detached-key", metavar="PUB",
                        help="public key for the detached signature (default: --key)")


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


def _options(args: argparse.Namespace) -> VerifyOptions:
    """VerifyOptions from the trust arguments (the detached signature comes from the artifact)."""
    return VerifyOptions(
        key=verification_key(args),
        pin=pin_from_args(args),
        detached_key_pem=read(args.detached_key, "detached key") if args.detached_key else None,
        require_detached=args.require_detached,
    )


def cmd_publish(args: argparse.Namespace) -> int:
    """Verify FILE (and FILE.sig, if present) with --key, push it, point --channel at it."""
    options = _options(args)
    archive = read(args.file, "bundle")
    sig_path = Path(args.signature) if args.signature else Path(f"{args.file}.sig")
    signature = read(sig_path, "detached signature") if args.signature or sig_path.is_file() else None
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
    out, sig_out = Path(args.out), Path(f"{args.out}.sig")
    try:
        write_atomic(out, artifact.archive)
        if artifact.signature is not None:
            write_atomic(sig_out, artifact.signature)
        else:
            sig_out.unlink(missing_ok=True)  # a stale signature beside the new archive would not match it
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


EXIT_CODES = "Exit codes: 0 ok, 1 refused (registry, digest, signature, pin, expiry), 2 usage error."
CREDENTIALS = ("Registry credentials: IG_GATE_REGISTRY_USERNAME/_PASSWORD, else the Docker config "
               "($DOCKER_CONFIG/config.json); never printed.")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add publish, promote, pull and channels to the `ig-policy` parser (called by bundles/cli.py)."""

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=help, description=f"{description} {CREDENTIALS}",
                                     epilog=EXIT_CODES)

    publish = command("publish", "verify a signed bundle and push it to a channel",
                      "Verifies FILE.tgz (and its detached signature) with --key, refuses an unsigned or "
                      "unverifiable bundle, then pushes it as an OCI artifact and points --channel at it. "
                      "Prints the OCI digest, version and revision as JSON.")
    publish.add_argument("file", metavar="FILE.tgz", help="signed bundle (ig-policy pack sign)")
    publish.add_argument("--signature", metavar="FILE.sig", help="detached signature (default: FILE.tgz.sig)")
    publish.add_argument("--channel", required=True, type=tag_arg, help="tag to set: dev, staging, prod")
    _registry_arguments(publish)
    _trust_arguments(publish)
    publish.set_defaults(func=cmd_publish)

    promote = command("promote", "point one channel at the bundle another channel has",
                      "Pulls the bundle --from points at, verifies it with --key, and points --to at the "
                      "same manifest digest (nothing is rebuilt or re-signed).")
    promote.add_argument("--from", dest="source", required=True, type=tag_arg, metavar="CHANNEL",
                         help="channel to promote from, e.g. dev")
    promote.add_argument("--to", dest="target", required=True, type=tag_arg, metavar="CHANNEL",
                         help="channel to point at the same digest, e.g. staging")
    _registry_arguments(promote)
    _trust_arguments(promote)
    promote.set_defaults(func=cmd_promote)

    pull = command("pull", "download and verify a bundle, then write it",
                   "Fetches by channel or by OCI digest (digests and sizes checked), verifies with --key, "
                   "and only then writes --out (and --out.sig when the artifact has a detached signature).")
    which = pull.add_mutually_exclusive_group(required=True)
    which.add_argument("--channel", type=tag_arg, help="channel tag to pull")
    which.add_argument("--digest", type=digest_arg, metavar="sha256:HEX",
                       help="OCI manifest digest (as `channels` prints)")
    pull.add_argument("--out", required=True, metavar="FILE.tgz", help="where to write the verified bundle")
    _registry_arguments(pull)
    _trust_arguments(pull)
    pull.set_defaults(func=cmd_pull)

    channels = command("channels", "show what each channel points at (JSON)",
                       "Prints {channel: {digest, version, revision} or null} for dev, staging and prod "
                       "(or each --channel). Version and revision are read from the bundle, unverified.")
    channels.add_argument("--channel", action="append", type=tag_arg, help="channel to show (repeatable)")
    _registry_arguments(channels)
    channels.set_defaults(func=cmd_channels)

"""The one verb that turns archive bytes into a trusted bundle.

Order of checks (OPA's, extended): format -> signature -> roots -> detached signature -> Sigstore -> pin ->
expiry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from ig_gate.bundles.archive import Bundle, Limits, read_bundle
from ig_gate.bundles.detached import verify_blob
from ig_gate.bundles.errors import ExpiredError, SignatureError
from ig_gate.bundles.manifest import expiry_instant
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.roots import check_roots
from ig_gate.bundles.signing import SignatureInfo, VerificationKey, verify_bundle_signature


@dataclass(frozen=True, slots=True)
class SigstoreOptions:
    """A keyless Sigstore bundle for the archive and what to check it against, fully offline."""

    bundle_json: bytes
    trusted_root_json: bytes
    identity: str
    issuer: str


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """What to require of a bundle. key=None allows unsigned bundles (development only)."""

    key: VerificationKey | None
    pin: Pin = field(default_factory=Pin)
    detached_signature: bytes | None = None
    detached_key_pem: bytes | None = None
    require_detached: bool = False
    sigstore: SigstoreOptions | None = None
    allow_expired: bool = False
    now: dt.datetime | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle that passed every configured check."""

    bundle: Bundle
    signature: SignatureInfo | None
    verified_at: dt.datetime

    @property
    def revision(self) -> str:
        return self.bundle.manifest.revision

    @property
    def version(self) -> str | None:
        return self.bundle.manifest.version

    @property
    def digest(self) -> str:
        return self.bundle.digest

    @property
    def cacheable(self) -> bool:
        return self.bundle.manifest.cacheable


def _check_detached(archive: bytes, options: VerifyOptions) -> None:
    if options.detached_signature is None:
        if options.require_detached:
            raise SignatureError("detached signature required but none was supplied")
        return
    public_pem = options.detached_key_pem
    if public_pem is None and options.key is not None and options.key.alg != "HS256":
        public_pem = options.key.material
    if public_pem is None:
        raise SignatureError("detached signature present but no public key is configured to check it")
    verify_blob(archive, options.detached_signature, public_pem)


def _check_sigstore(archive: bytes, sigstore: SigstoreOptions) -> None:
    from ig_gate.bundles.sigstore_verify import verify_sigstore_bundle  # heavy; only when configured

    verify_sigstore_bundle(
        archive,
        sigstore.bundle_json,
        sigstore.trusted_root_json,
        identity=sigstore.identity,
        issuer=sigstore.issuer,
    )


def verify_bundle(archive: bytes, options: VerifyOptions) -> VerifiedBundle:
    """Parse and check archive against options; raises the BundleError subclass of the first failed check."""
    now = options.now or dt.datetime.now(dt.UTC)
    bundle = read_bundle(archive, options.limits)
    signature = verify_bundle_signature(bundle, options.key) if options.key is not None else None
    check_roots(bundle)  # after the signature: no unsigned Rego is parsed when a key is configured
    _check_detached(archive, options)
    if options.sigstore is not None:
        _check_sigstore(archive, options.sigstore)
    options.pin.check(bundle)
    expires = bundle.manifest.expires
    if not options.allow_expired and expires is not None and bundle.manifest.is_expired(now):
        instant = expiry_instant(expires).isoformat()
        raise ExpiredError(f"bundle expired at {instant} (.manifest expires {expires.isoformat()})")
    return VerifiedBundle(bundle, signature, now)


def verify_artifact(archive: bytes, signature: bytes | None, options: VerifyOptions) -> VerifiedBundle:
    """verify_bundle with a registry artifact's detached signature layer added to options.

    With no key configured at all (development: unsigned allowed) the layer is ignored, as there is
    nothing to check it against; otherwise it must verify.
    """
    if signature is not None and (options.key is not None or options.detached_key_pem is not None):
        options = dataclasses.replace(options, detached_signature=signature)
    return verify_bundle(archive, options)

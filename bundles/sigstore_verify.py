"""Keyless Sigstore verification of a bundle archive, fully offline.

The operator supplies the trusted root (Fulcio CA chain, Rekor and CT log keys) as a
`trusted_root.json`; nothing is fetched (no TUF, no Rekor lookups). Every failure,
including malformed input, becomes a one-line `SignatureError` (fail closed).
"""

from __future__ import annotations

import re

from sigstore.models import Bundle as SigstoreBundle
from sigstore.models import TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity
from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootModel

from ig_gate.bundles.errors import SignatureError

_MAX_DETAIL = 300
_PYDANTIC_HINT = re.compile(r"\s*For further information visit \S+")


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, bounded (sigstore embeds whole models in some messages)."""
    text = " ".join(_PYDANTIC_HINT.sub("", str(exc)).split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _load_verifier(trusted_root_json: bytes) -> Verifier:
    """A Verifier over the given trusted root only (the public equivalent of TrustedRoot.from_file)."""
    try:
        return Verifier(trusted_root=TrustedRoot(TrustedRootModel.from_json(trusted_root_json)))
    except Exception as exc:  # fail closed: any parse/validation problem means "untrusted"
        raise SignatureError(f"sigstore trusted root invalid: {_one_line(exc)}") from exc


def _load_bundle(bundle_json: bytes) -> SigstoreBundle:
    try:
        return SigstoreBundle.from_json(bundle_json)
    except Exception as exc:  # fail closed on malformed bundles of any shape
        raise SignatureError(f"sigstore bundle invalid: {_one_line(exc)}") from exc


def verify_sigstore_bundle(
    artifact: bytes, bundle_json: bytes, trusted_root_json: bytes, *, identity: str, issuer: str
) -> None:
    """Verify that `artifact` was signed by `identity` (certificate SAN) as vouched for by `issuer`.

    Checks, offline: certificate chain to a CA in the trusted root at the log's integrated
    time, embedded SCT against a trusted CT log, code-signing usage, identity and OIDC
    issuer, transparency-log inclusion proof, signed checkpoint and inclusion promise,
    the artifact signature, and the log entry's consistency with both.
    Raises SignatureError saying what failed.
    """
    if not identity or not issuer:
        raise SignatureError("sigstore verification needs both an expected identity and an issuer")
    verifier = _load_verifier(trusted_root_json)
    bundle = _load_bundle(bundle_json)
    try:
        verifier.verify_artifact(artifact, bundle, Identity(identity=identity, issuer=issuer))
    except Exception as exc:  # fail closed: sigstore raises non-VerificationError types on odd input
        raise SignatureError(
            f"sigstore bundle rejected (expected identity {identity!r}, issuer {issuer!r}): {_one_line(exc)}"
        ) from exc

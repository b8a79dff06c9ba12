"""Detached, cosign-compatible signature over a whole archive: base64(DER signature over SHA-256(bytes)).

EC P-256 keys give ECDSA (what `cosign sign-blob` writes and `cosign verify-blob --key` /
`openssl dgst -sha256 -verify` accept); RSA keys give PKCS#1 v1.5 with SHA-256.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ig_gate.bundles.errors import SignatureError


def _check_curve(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"detached signature: EC key must be P-256, not {key.curve.name}")


def sign_blob(data: bytes, private_key_pem: bytes) -> bytes:
    """Sign data; return the base64 signature text (bytes, no newline)."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"detached signature: cannot load private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _check_curve(key)
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise SignatureError("detached signature: only EC P-256 and RSA keys are supported")
    return base64.b64encode(signature)


def verify_blob(data: bytes, signature_b64: bytes, public_key_pem: bytes) -> None:
    """Check a base64 detached signature over data; raises SignatureError when it does not verify."""
    try:
        signature = base64.b64decode(b"".join(signature_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("detached signature: not valid base64") from None
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"detached signature: cannot load public key: {exc}") from None
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            _check_curve(key)
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise SignatureError("detached signature: only EC P-256 and RSA keys are supported")
    except InvalidSignature:
        raise SignatureError("detached signature does not match the archive") from None

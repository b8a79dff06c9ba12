"""Signing key pairs as PEM: the one place keys are generated (ig-policy keygen, the dev IdP, tests)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class KeyPairPem:
    """A fresh private key with its PKCS#8 PEM and its SubjectPublicKeyInfo PEM."""

    key: PrivateKey
    private_pem: bytes
    public_pem: bytes


def generate_key_pair(alg: str = "ES256", rsa_bits: int = 3072) -> KeyPairPem:
    """EC P-256 for ES256, RSA (`rsa_bits`) for RS256/PS256."""
    key: PrivateKey
    if alg.startswith("ES"):
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(65537, rsa_bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPairPem(key, private_pem, public_pem)

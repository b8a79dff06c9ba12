"""Fresh keys per test run: EC P-256 / RSA PEMs and JWKS documents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

from ig_gate.bundles.keys import generate_key_pair


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key, its PEMs, and its JWK (public) with a key id."""

    private_key: object
    private_pem: bytes
    public_pem: bytes
    kid: str
    alg: str

    def jwk(self) -> dict:
        algo = jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        jwk = json.loads(algo.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write NAME.key (0600) and NAME.pub into directory; return both paths."""
        key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
        key_path.write_bytes(self.private_pem)
        key_path.chmod(0o600)
        pub_path.write_bytes(self.public_pem)
        return key_path, pub_path


def make_keypair(alg: str = "ES256", kid: str = "test-key") -> KeyPair:
    """Generate a new EC P-256 (ES256) or RSA-2048 (RS256/PS256) key pair."""
    pair = generate_key_pair(alg, rsa_bits=2048)
    return KeyPair(pair.key, pair.private_pem, pair.public_pem, kid, alg)


def write_jwks(path: Path, *pairs: KeyPair) -> Path:
    """Write a JWKS document with the public keys of pairs."""
    path.write_text(json.dumps({"keys": [p.jwk() for p in pairs]}))
    return path

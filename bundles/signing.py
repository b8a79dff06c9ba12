"""OPA `.signatures.json`: sign a bundle with one compact JWS, and verify it the way OPA does.

The JWS payload lists every file `{name, hash, algorithm}` (name = archive path without its leading "/")
plus `keyid`/`scope`/`iat`/`iss`. Verification: exactly one JWS; the configured algorithm only (never the
header's choice); key id = configured -> header `kid` -> payload `keyid`; payload scope equal to the
configured scope when one is configured; every archive file listed with an equal hash and every listed file
present.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

from ig_gate.bundles.archive import SIGNATURES, Bundle, replace_files
from ig_gate.bundles.errors import BundleError, SignatureError
from ig_gate.bundles.filehash import file_digest

SIGN_ALGORITHMS = ("ES256", "RS256", "PS256", "HS256")
VERIFY_ALGORITHMS = SIGN_ALGORITHMS
ISSUER = "ig-policy"
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A PEM public key (ES256/RS256/PS256) or an HS256 shared secret, with optional key id and scope."""

    material: bytes
    alg: str = "ES256"
    key_id: str | None = None
    scope: str | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, alg: str | None = None, key_id: str | None = None, scope: str | None = None
    ) -> VerificationKey:
        """Read a key file. Without alg: EC PEM -> ES256, RSA PEM -> RS256, anything else -> HS256 secret.

        An HS256 secret file may end in one newline, which is not part of the secret.
        """
        try:
            material = Path(path).read_bytes()
        except OSError as exc:
            raise SignatureError(f"{path}: cannot read verification key ({exc.strerror})") from None
        if not material.strip():
            raise SignatureError(f"{path}: verification key file is empty")
        alg = alg or _infer_alg(material)
        if alg == "HS256":
            material = material.removesuffix(b"\n").removesuffix(b"\r")
        return cls(material, alg, key_id, scope)


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """What a verified `.signatures.json` said."""

    key_id: str | None
    alg: str
    files: int
    scope: str | None


def _infer_alg(material: bytes) -> str:
    if b"-----BEGIN" not in material:
        return "HS256"
    try:
        key = serialization.load_pem_public_key(material)
    except ValueError as exc:
        raise SignatureError(f"verification key is not a PEM public key: {exc}") from None
    return "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "RS256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str, what: str) -> bytes:
    if not _BASE64URL.match(part):
        raise SignatureError(f"{SIGNATURES}: JWS {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{SIGNATURES}: JWS {what} is not base64url") from exc


def _algorithm(alg: str) -> Any:
    if alg not in VERIFY_ALGORITHMS:
        known = ", ".join(VERIFY_ALGORITHMS)
        raise SignatureError(f"unsupported signature algorithm {alg!r} (use one of {known})")
    return get_default_algorithms()[alg]


def _prepare(alg: str, material: bytes) -> Any:
    """Load key material for alg; HMAC refuses PEM/DER/SSH keys, so no algorithm confusion."""
    algorithm = _algorithm(alg)
    try:
        return algorithm.prepare_key(material)
    except InvalidKeyError as exc:
        detail = str(exc) if alg == "HS256" else f"the key does not fit algorithm {alg}"
        raise SignatureError(f"{alg} key rejected: {detail}") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{alg} key rejected: {exc}") from None


def sign_bundle(
    bundle: Bundle,
    private_key_pem: bytes,
    *,
    alg: str = "ES256",
    key_id: str | None = None,
    scope: str | None = None,
) -> Bundle:
    """Return bundle re-packed with a `.signatures.json` over all its other files (HS256: key = secret)."""
    files = [
        {"name": name, "hash": file_digest(name, body), "algorithm": "SHA-256"}
        for name, body in sorted(bundle.files.items())
        if name != SIGNATURES
    ]
    payload: dict[str, Any] = {"files": files, "iat": int(time.time()), "iss": ISSUER}
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key_id:
        payload["keyid"] = header["kid"] = key_id
    if scope:
        payload["scope"] = scope
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    algorithm = _algorithm(alg)
    signature = algorithm.sign(signing_input.encode(), _prepare(alg, private_key_pem))
    token = f"{signing_input}.{_b64(signature)}"
    return replace_files(bundle, {SIGNATURES: json.dumps({"signatures": [token]}).encode()})


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise SignatureError(f"{SIGNATURES}: JWS {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise SignatureError(f"{SIGNATURES}: JWS {what} is not a JSON object")
    return value


def decode_unverified(token: Any) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Split a compact JWS into (header, payload, signature) WITHOUT verifying it (SignatureError if bad)."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise SignatureError(f"{SIGNATURES}: not a compact JWS (expected 3 segments)")
    header = _object(_unb64(parts[0], "header"), "header")
    payload = _object(_unb64(parts[1], "payload"), "payload")
    return header, payload, _unb64(parts[2], "signature")


def verify_token(token: str, key: VerificationKey) -> tuple[dict[str, Any], str | None]:
    """Verify one compact JWS with key; return (payload, resolved key id). Raises SignatureError."""
    header, payload, signature = decode_unverified(token)
    if header.get("alg") != key.alg:
        raise SignatureError(f"{SIGNATURES}: JWS alg {header.get('alg')!r} is not the configured {key.alg}")
    if "crit" in header:
        raise SignatureError(f"{SIGNATURES}: JWS critical header parameters are not supported")
    signing_input = token.rsplit(".", 1)[0].encode()
    if not _algorithm(key.alg).verify(signing_input, _prepare(key.alg, key.material), signature):
        raise SignatureError(f"{SIGNATURES}: JWS signature does not verify with the configured {key.alg} key")
    key_id = key.key_id or _text(header.get("kid")) or _text(payload.get("keyid"))
    if key.scope is not None and payload.get("scope") != key.scope:
        raise SignatureError(f"{SIGNATURES}: scope {payload.get('scope')!r} does not match {key.scope!r}")
    return payload, key_id


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _listed_files(payload: dict[str, Any]) -> dict[str, tuple[str, str]]:
    entries = payload.get("files")
    if not isinstance(entries, list):
        raise SignatureError(f"{SIGNATURES}: payload has no 'files' list")
    listed: dict[str, tuple[str, str]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "hash")):
            raise SignatureError(f"{SIGNATURES}: malformed file entry {entry!r:.80}")
        name = entry["name"].removeprefix("/")
        if name in listed:
            raise SignatureError(f"{SIGNATURES}: file {name} is listed twice")
        algorithm = entry.get("algorithm")
        if not isinstance(algorithm, str) or not algorithm:
            raise SignatureError(f"{SIGNATURES}: no hashing algorithm given for file {name}")
        listed[name] = (entry["hash"].lower(), algorithm)
    return listed


def _signature_token(bundle: Bundle) -> str:
    document = bundle.signatures_json
    if document is None:
        raise SignatureError(f"bundle has no {SIGNATURES} but a verification key is configured")
    if not isinstance(document, dict):
        raise SignatureError(f"{SIGNATURES}: expected a JSON object")
    if document.get("plugin"):
        raise SignatureError(f"{SIGNATURES}: signature plugin {document['plugin']!r} is not supported")
    tokens = document.get("signatures")
    if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
        count = len(tokens) if isinstance(tokens, list) else 0
        raise SignatureError(f"{SIGNATURES}: expected exactly one JWS, found {count}")
    return tokens[0]


def verify_bundle_signature(bundle: Bundle, key: VerificationKey) -> SignatureInfo:
    """Verify the bundle's `.signatures.json` against key and the archive's files; raises SignatureError."""
    payload, key_id = verify_token(_signature_token(bundle), key)
    listed = _listed_files(payload)
    for name, body in sorted(bundle.files.items()):
        if name == SIGNATURES:
            continue
        if name not in listed:
            raise SignatureError(f"{name}: file is not included in the bundle signature")
        expected, algorithm = listed.pop(name)
        try:
            actual = file_digest(name, body, algorithm)
        except BundleError as exc:
            raise SignatureError(str(exc)) from exc
        if actual != expected:
            raise SignatureError(f"{name}: digest mismatch (signed {expected}, archive has {actual})")
    if listed:
        raise SignatureError(f"{min(listed)}: file is listed in the signature but missing from the archive")
    scope = payload.get("scope")
    return SignatureInfo(key_id, key.alg, len(bundle.files) - 1, scope if isinstance(scope, str) else None)

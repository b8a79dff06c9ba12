"""Compact JWS/JWT verification with pyjwt's exact rules, without its per-call overhead.

`verify_compact()` accepts and rejects what `jwt.decode(token, key, algorithms=[key's alg], options=...)`
does with the options JWKSet uses (signature, `require`, `iss`, `aud`, `sub`/`jti` types; times are
checked by the caller), in the same order, so a token with several problems fails for the same reason:
segments and strict base64url (no stray characters, canonical trailing bits, at most two "=") -> JSON
header object -> `kid` type, `crit` (only "b64" understood), `b64: false` refused (no detached payloads)
-> signature -> payload JSON object -> required claims -> iss -> aud -> sub/jti types.

The cryptography is pyjwt's own (`PyJWK.Algorithm.verify`); what is saved is pyjwt's byte-by-byte base64
check in Python and the key preparation, done once per key here. JSON gives what pyjwt's `json.loads`
gives (see `loads`). tests/middleware/test_jws.py holds pyjwt as the reference: both must agree on every
token, hypothesis-generated garbage included.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from ig_gate.errors import IgGateError

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # 19 digits: an integer that may not fit in 64 bits
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_SUPPORTED_CRIT = frozenset({"b64"})


class JWTRejected(IgGateError):
    """A JWT failed verification; description is safe to show (no token data). JWTExpired: it expired."""

    code = "invalid"
    label = "token rejected"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class JWTExpired(JWTRejected):
    """The JWT's `exp` lies in the past (beyond the leeway)."""

    code = "expired"


_INVALID = "token invalid"


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A JWK made ready once: pyjwt's algorithm object and prepared key, or why it cannot verify anything
    (pyjwt would raise the same error on every token: a key it cannot prepare, or one too short)."""

    jwk: jwt.PyJWK
    algorithm_name: str
    algorithm: Any  # jwt.algorithms.Algorithm
    key: Any
    problem: str | None

    @classmethod
    def from_jwk(cls, jwk: jwt.PyJWK) -> VerifyingKey:
        """Prepare `jwk` as pyjwt does before each verification (enforce_minimum_key_length on)."""
        algorithm = jwk.Algorithm
        try:
            key = algorithm.prepare_key(jwk.key)
            problem = algorithm.check_key_length(key)
        except Exception as exc:
            key, problem = None, type(exc).__name__
        return cls(jwk, jwk.algorithm_name, algorithm, key, problem)


def strict_header(token: str) -> dict[str, Any] | None:
    """The JOSE header as verify_compact reads it (strict base64url of a JSON object), else None."""
    dot = token.find(".")
    if dot < 0:
        return None
    try:
        return _json_object(_segment(token[:dot].encode()))
    except (JWTRejected, UnicodeEncodeError):
        return None


def verify_compact(
    token: str,
    key: VerifyingKey,
    *,
    issuer: str | None,
    audience: str | Iterable[str] | None,
    require: Sequence[str],
    header: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of `token` signed by `key` with the key's algorithm; JWTRejected as JWKSet.decode maps
    pyjwt's errors: "signature invalid", "claim 'x' missing", "wrong issuer", "wrong audience", else
    "token invalid". The caller has checked that the header's alg is allowed and is the key's; `header`,
    when given, is `strict_header(token)` already parsed (it is not parsed again)."""
    try:
        raw = token.encode()
    except UnicodeEncodeError:
        raise JWTRejected(_INVALID) from None
    signing_input, dot, crypto_segment = raw.rpartition(b".")
    header_segment, dot2, payload_segment = signing_input.partition(b".")
    if not dot or not dot2:
        raise JWTRejected(_INVALID)  # not enough segments
    if header is None:
        header = _json_object(_segment(header_segment))
    if header.get("b64", True) is False:  # detached payloads are never passed: pyjwt refuses these
        raise JWTRejected(_INVALID)
    payload = _segment(payload_segment)
    signature = _segment(crypto_segment)
    _check_header(header, key.algorithm_name)
    if key.problem is not None:
        raise JWTRejected(_INVALID)
    if not key.algorithm.verify(signing_input, key.key, signature):
        raise JWTRejected("signature invalid")
    claims = _json_object(payload)
    _check_claims(claims, issuer, audience, require)
    return claims


def _segment(segment: bytes) -> bytes:
    """Strict base64url, as pyjwt's PyJWS._decode_base64url_segment."""
    if _SEGMENT.fullmatch(segment) is None:
        raise JWTRejected(_INVALID)
    stripped = segment.rstrip(b"=")
    if (len(stripped) != len(segment) and len(segment) % 4) or len(stripped) % 4 == 1:
        raise JWTRejected(_INVALID)
    standard = stripped.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(stripped) % 4)
    try:
        decoded = binascii.a2b_base64(standard)
    except binascii.Error:
        raise JWTRejected(_INVALID) from None
    if binascii.b2a_base64(decoded, newline=False) != standard:  # non-zero trailing bits
        raise JWTRejected(_INVALID)
    return decoded


def loads(data: bytes) -> Any:
    """`json.loads(data)`, ~4x faster: orjson where it gives the same value. orjson reads integers beyond
    64 bits as floats (so text with a 19-digit run goes to json), and refuses some of what json accepts
    (NaN, Infinity, a BOM, UTF-16, lone surrogates; json decides those). ValueError/RecursionError as json.
    """
    if _LONG_DIGITS.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = loads(data)
    except (ValueError, RecursionError):
        raise JWTRejected(_INVALID) from None
    if not isinstance(value, dict):
        raise JWTRejected(_INVALID)
    return value


def _check_header(header: dict[str, Any], algorithm_name: str) -> None:
    if "kid" in header and not isinstance(header["kid"], str):
        raise JWTRejected(_INVALID)
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit:
            raise JWTRejected(_INVALID)
        for ext in crit:
            if not isinstance(ext, str) or ext not in _SUPPORTED_CRIT or ext not in header:
                raise JWTRejected(_INVALID)
    if header.get("alg") != algorithm_name:  # the caller checked the unverified header; this is the one
        raise JWTRejected(_INVALID)  # that was signed (it can only differ in broken tokens)


def _check_claims(
    claims: dict[str, Any], issuer: str | None, audience: str | Iterable[str] | None, require: Sequence[str]
) -> None:
    for claim in require:
        if claims.get(claim) is None:
            raise JWTRejected(f"claim {claim!r} missing")
    if issuer is not None:
        if "iss" not in claims:
            raise JWTRejected("claim 'iss' missing")
        if claims["iss"] != issuer or not isinstance(claims["iss"], str):
            raise JWTRejected("wrong issuer")
    if audience is not None:
        _check_audience(claims, audience)
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise JWTRejected(_INVALID)
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise JWTRejected(_INVALID)


def _check_audience(claims: dict[str, Any], audience: str | Iterable[str]) -> None:
    if not claims.get("aud"):
        raise JWTRejected("claim 'aud' missing")
    given = claims["aud"]
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or any(not isinstance(item, str) for item in given):
        raise JWTRejected("wrong audience")
    wanted = [audience] if isinstance(audience, str) else audience
    if all(item not in given for item in wanted):
        raise JWTRejected("wrong audience")

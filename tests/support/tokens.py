"""Mint IdP tokens and device attestations for tests."""

from __future__ import annotations

import time
from typing import Any

import jwt

from tests.support.keys import KeyPair

ISSUER = "https://idp.example.test"
AUDIENCE = "ig-gateway"


def mint(pair: KeyPair, *, lifetime_s: int = 600, headers: dict | None = None, **claims: Any) -> str:
    """A signed JWT with sane defaults (iss, aud, iat, exp, sub) overridable by claims."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + lifetime_s, "sub": "alice", **claims}
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": pair.kid, **(headers or {})}
    return jwt.encode(body, pair.private_pem, algorithm=pair.alg, headers=headers)


def session_token(pair: KeyPair, *, risk: str = "low", tenant: str = "acme", **claims: Any) -> str:
    """A session token for tenant with the given risk."""
    return mint(pair, risk=risk, tenant=tenant, **claims)


def attestation(
    pair: KeyPair, posture: str, device_id: str = "dev-1", lifetime_s: int = 600, *, sub: str = "alice",
    **claims: Any,
) -> str:
    """A device-attestation JWT signed by the MDM key, for user `sub` (extra claims: iss, aud, cnf, ...;
    a claim given as None is left out)."""
    now = int(time.time())
    body = {"posture": posture, "device_id": device_id, "sub": sub, "iat": now, "exp": now + lifetime_s}
    body = {k: v for k, v in {**body, **claims}.items() if v is not None}
    return jwt.encode(body, pair.private_pem, algorithm=pair.alg, headers={"kid": pair.kid})

"""A development identity provider: one signing key, a JWKS, and tokens on demand.

For the demo, the load tests and local experiments only — it signs whatever it is asked to.
`DevIdP.app()` serves `/.well-known/jwks.json` and `POST /token` (form or JSON: sub, tenant, risk,
acr, amr, device posture) so that a client can fetch a stepped-up token after a 401.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ig_gate.bundles.keys import generate_key_pair

DEFAULT_ISSUER = "https://idp.example.test"
DEFAULT_AUDIENCE = "ig-gateway"


@dataclass(frozen=True, slots=True)
class DevKey:
    """An ES256 signing key with its key id."""

    private_pem: bytes
    kid: str

    @classmethod
    def generate(cls, kid: str) -> DevKey:
        return cls(generate_key_pair("ES256").private_pem, kid)

    @classmethod
    def load(cls, path: Path, kid: str) -> DevKey:
        return cls(path.read_bytes(), kid)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document for this key."""
        public = serialization.load_pem_private_key(self.private_pem, None).public_key()
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_pem, algorithm="ES256", headers={"kid": self.kid})


class DevIdP:
    """Mints session tokens and device attestations signed by development keys."""

    def __init__(
        self,
        session_key: DevKey,
        device_key: DevKey,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self.session_key = session_key
        self.device_key = device_key
        self.issuer = issuer
        self.audience = audience

    def session_token(
        self,
        subject: str = "alice",
        tenant: str = "acme",
        risk: str = "low",
        *,
        acr: str | None = None,
        amr: list[str] | None = None,
        lifetime_s: int = 3600,
        session_id: str | None = None,
    ) -> str:
        """A bearer token; `acr`/`amr` given means the user just authenticated that strongly."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tenant": tenant,
            "risk": risk,
            "iat": now,
            "exp": now + lifetime_s,
            "auth_time": now,
            "sid": session_id or f"{subject}-session",
        }
        if acr:
            claims["acr"] = acr
        if amr:
            claims["amr"] = amr
        return self.session_key.sign(claims)

    def attestation(
        self, posture: str, device_id: str = "device-1", lifetime_s: int = 3600, subject: str = "alice"
    ) -> str:
        """A device-attestation JWT as an MDM would issue it, for `subject`'s device (it counts only for a
        session of that subject)."""
        now = int(time.time())
        claims = {
            "posture": posture, "device_id": device_id, "sub": subject, "iat": now, "exp": now + lifetime_s,
        }
        return self.device_key.sign(claims)

    def app(self) -> Starlette:
        """A tiny HTTP IdP: JWKS documents and a token endpoint."""

        async def session_jwks(_: Request) -> JSONResponse:
            return JSONResponse(self.session_key.jwks())

        async def device_jwks(_: Request) -> JSONResponse:
            return JSONResponse(self.device_key.jwks())

        async def token(request: Request) -> JSONResponse:
            if request.headers.get("content-type", "").startswith("application/json"):
                form: dict[str, Any] = await request.json()
            else:
                form = dict(await request.form())
            amr = form.get("amr")
            token = self.session_token(
                subject=str(form.get("sub", "alice")),
                tenant=str(form.get("tenant", "acme")),
                risk=str(form.get("risk", "low")),
                acr=form.get("acr"),
                amr=amr.split(",") if isinstance(amr, str) else amr,
            )
            return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

        return Starlette(
            routes=[
                Route("/.well-known/jwks.json", session_jwks),
                Route("/.well-known/device-jwks.json", device_jwks),
                Route("/token", token, methods=["POST"]),
            ]
        )

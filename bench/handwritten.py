"""What users write by hand instead of ig-gate, for `make bench` to compare against: a pure-ASGI middleware
that verifies the bearer JWT with pyjwt on every request (no cache, no device, geo, risk or policy) and
puts its claims into `scope["state"]["user"]`; a request without a valid token gets a 401."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import jwt

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = json.dumps({"error": "unauthorized"}).encode()


class PyJWTMiddleware:
    """Verify `Authorization: Bearer <JWT>` (ES256/RS256, `iss`, `aud`, `exp`) with a JWKS file's keys."""

    def __init__(self, app: ASGIApp, jwks: Path, issuer: str, audience: str) -> None:
        self.app = app
        self.keys = {key.key_id: key for key in jwt.PyJWKSet.from_json(jwks.read_text()).keys}
        self.issuer = issuer
        self.audience = audience

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        claims = self._claims(dict(scope["headers"]).get(b"authorization", b""))
        if claims is None:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})  # fmt: skip
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        scope.setdefault("state", {})["user"] = claims
        await self.app(scope, receive, send)

    def _claims(self, authorization: bytes) -> dict[str, Any] | None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            key = self.keys.get(jwt.get_unverified_header(token).get("kid"))
            if key is None:
                return None
            return jwt.decode(
                token, key.key, algorithms=["ES256", "RS256"], audience=self.audience, issuer=self.issuer
            )
        except jwt.PyJWTError:
            return None

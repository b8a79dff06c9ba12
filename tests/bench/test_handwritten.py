"""bench/handwritten.py, the `pyjwt` config of `make bench`: what users write by hand instead of ig-gate
verifies the token on every request, so the comparison measures a middleware that really authenticates."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bench.handwritten import PyJWTMiddleware
from ig_gate.sidecar.devidp import DevIdP, DevKey


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.scope["state"]["user"]["sub"]})


def client(tmp_path: Path, idp: DevIdP) -> TestClient:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(idp.session_key.jwks()))
    app = Starlette(routes=[Route("/graphql", whoami, methods=["POST"])])
    return TestClient(PyJWTMiddleware(app, jwks, idp.issuer, idp.audience))


def test_a_valid_token_reaches_the_app_with_its_claims(tmp_path: Path) -> None:
    idp = DevIdP(DevKey.generate("k1"), DevKey.generate("m1"))
    response = client(tmp_path, idp).post(
        "/graphql", headers={"Authorization": f"Bearer {idp.session_token('bob')}"}
    )
    assert response.status_code == 200
    assert response.json() == {"sub": "bob"}


def test_missing_foreign_or_expired_tokens_are_refused_401(tmp_path: Path) -> None:
    idp = DevIdP(DevKey.generate("k1"), DevKey.generate("m1"))
    other = DevIdP(DevKey.generate("k1"), DevKey.generate("m1"))  # same kid, another key
    http = client(tmp_path, idp)
    for headers in (
        {},
        {"Authorization": "Basic Ym9iOnB3"},
        {"Authorization": f"Bearer {other.session_token('bob')}"},
        {"Authorization": f"Bearer {idp.session_token('bob', lifetime_s=-120)}"},
    ):
        assert http.post("/graphql", headers=headers).status_code == 401, headers

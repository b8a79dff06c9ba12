"""The demo GraphQL-ish service that ig-gate protects in `make demo` and in the benchmarks.

It answers `POST /graphql` (and `GET /graphql?query=...`) without a GraphQL library: a query returns
the caller's identity as ig-gate established it, a mutation echoes its variables. Enough to see what
the gate lets through; nothing here is part of the enforcement.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_IDENTITY_KEYS = ("subject", "tenant", "risk", "posture", "country", "decision_id", "profile")


def identity_of(request: Request) -> dict[str, Any]:
    """What ig-gate put into scope["state"]["ig_gate"] for this request (empty when unprotected)."""
    ident = request.scope.get("state", {}).get("ig_gate")
    if ident is None:
        return {}
    if isinstance(ident, dict):
        return {k: ident.get(k) for k in _IDENTITY_KEYS}
    return {k: getattr(ident, k, None) for k in _IDENTITY_KEYS}


async def graphql(request: Request) -> Response:
    if request.method == "GET":
        document = request.query_params.get("query", "")
        variables: Any = {}
    else:
        try:
            payload = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"errors": [{"message": "body is not JSON"}]}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"errors": [{"message": "body must be an object"}]}, status_code=400)
        document = str(payload.get("query", ""))
        variables = payload.get("variables") or {}
    if document.lstrip().startswith("mutation"):
        return JSONResponse({"data": {"update": {"ok": True, "input": variables}}})
    return JSONResponse({"data": {"me": identity_of(request), "greeting": "hello from the demo service"}})


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    """The bare demo app (wrap it in ZeroTrustMiddleware to protect it)."""
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
        ]
    )

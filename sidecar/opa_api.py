"""An OPA-compatible Data API over the active signed bundle, for clients that already speak OPA's REST API.

- `POST /v1/data/{path}` with `{"input": ...}` -> `{"result": ..., "decision_id": ...}` (no `result` key
  when the document is undefined, as OPA does).
- `GET /v1/data/{path}` (optional `?input=<JSON>`).
- `GET /health` -> 200 `{}`; `GET /health?bundles` (or `?plugins`: the bundle source is the only plugin)
  -> 200 only while a verified bundle is active, else 500 with OPA's unhealthy shape `{"code", "error"}`.

Errors use OPA's shape: `{"code": "invalid_parameter" | "internal_error", "message": ...}`. Queries run
on the serving thread (the Rego engines are per thread), like the gate's own decisions.

No authentication (OPA's default too): anyone who reaches the port can evaluate any rule with any input
and read the bundle's whole data document (`GET /v1/data`). `ig-gate serve` binds 127.0.0.1 by default;
on another address, let only the gateway and PDP clients reach it (NetworkPolicy, firewall).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ig_gate.bundles.errors import PolicyEvalError
from ig_gate.sidecar.rego_path import PathError, query_for_path
from ig_gate.sidecar.wiring import Sidecar

INVALID, INTERNAL = "invalid_parameter", "internal_error"


def opa_error(status: int, code: str, message: str) -> JSONResponse:
    """An error response in OPA's shape."""
    return JSONResponse({"code": code, "message": message}, status_code=status)


class _BadRequest(Exception):
    """The request's input document cannot be read; the message is safe to return."""


def routes(sidecar: Sidecar) -> list[BaseRoute]:
    """The Data API and /health routes."""
    gate = sidecar.gate

    def evaluate(path: str, input_document: Any) -> Response:
        try:
            query = query_for_path(path)
        except PathError as exc:
            return opa_error(400, INVALID, str(exc))
        snapshot = gate.policy.current()
        if snapshot is None:
            return opa_error(500, INTERNAL, "no verified policy bundle is active")
        try:
            result = snapshot.evaluate(query, input_document if input_document is not None else {})
        except PolicyEvalError as exc:
            return opa_error(500, INTERNAL, str(exc)[:500])
        body: dict[str, Any] = {"decision_id": sidecar.ids.next()}
        if result is not None:
            body["result"] = result
        return JSONResponse(body)

    async def post_data(request: Request) -> Response:
        try:
            document = await _input_from_body(request, sidecar.settings.server.max_body_bytes)
        except _BadRequest as exc:
            return opa_error(400, INVALID, str(exc))
        return evaluate(request.path_params.get("path", ""), document)

    async def get_data(request: Request) -> Response:
        raw = request.query_params.get("input")
        try:
            document = None if raw is None else json.loads(raw)
        except ValueError:
            return opa_error(400, INVALID, "input query parameter: not valid JSON")
        return evaluate(request.path_params.get("path", ""), document)

    async def health(request: Request) -> Response:
        params = request.query_params
        if ("bundles" in params or "plugins" in params) and gate.policy.current() is None:
            unhealthy = {"code": INTERNAL, "error": "not all configured bundles have been activated"}
            return JSONResponse(unhealthy, status_code=500)
        return JSONResponse({})

    return [
        Route("/v1/data", post_data, methods=["POST"]),
        Route("/v1/data", get_data, methods=["GET"]),
        Route("/v1/data/{path:path}", post_data, methods=["POST"]),
        Route("/v1/data/{path:path}", get_data, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]


async def _input_from_body(request: Request, limit: int) -> Any:
    """The `input` member of a JSON request body (None when the body is empty or has no input)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(f"request body: larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _BadRequest("request body: not valid JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body: must be a JSON object like {\"input\": ...}")
    return body.get("input")

"""An OPA-compatible Data API over the active signed bundle, for clients that already speak OPA's REST API.

- `POST /v1/data/{path}` with `{"input": ...}` -> `{"result": ..., "decision_id": ...}` (no `result` key
  when the document is undefined, as OPA does). A body without `input` (empty, `{}`, or `"input": null`)
  is evaluated all the same and answered with OPA's `warning: {"code": "api_usage_warning", ...}`.
- `GET /v1/data/{path}` (optional `?input=<JSON>`).
- `GET /health` -> 200 `{}`; `GET /health?bundles` (or `?plugins`: the bundle source is the only plugin)
  -> 200 only while a verified bundle is active, else 500 with OPA's unhealthy shape `{"code", "error"}`.
- No verified bundle active (not ready, as OPA before its bundles activate): the Data API answers 503.

Errors use OPA's shape: `{"code": "invalid_parameter" | "internal_error", "message": ...}`. An input
nested deeper than MAX_INPUT_DEPTH levels is a 400 (the engine would recurse on it). Queries run on the
serving thread (the Rego engines are per thread), like the gate's own decisions.

Served on the admin listener only (`server.admin_host`/`admin_port`), never on the client port: anyone
who reaches it can evaluate any rule with any input and read the bundle's whole data document, so off
loopback it needs `server.admin_auth` (see sidecar/admin.py).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ig_gate.bundles.errors import PolicyEvalError
from ig_gate.middleware.gate import evaluate_policy
from ig_gate.middleware.rego_path import PathError, query_for_path
from ig_gate.sidecar.wiring import Sidecar

INVALID, INTERNAL = "invalid_parameter", "internal_error"
MAX_INPUT_DEPTH = 64  # nesting levels of arrays/objects in an input document
MISSING_INPUT = {"code": "api_usage_warning", "message": "'input' key missing from the request"}


def opa_error(status: int, code: str, message: str) -> JSONResponse:
    """An error response in OPA's shape."""
    return JSONResponse({"code": code, "message": message}, status_code=status)


class _BadRequest(Exception):
    """The request's input document cannot be read; the message is safe to return."""


def routes(sidecar: Sidecar) -> list[BaseRoute]:
    """The Data API and /health routes."""
    gate = sidecar.gate

    async def evaluate(path: str, input_document: Any, warning: dict[str, str] | None = None) -> Response:
        try:
            query = query_for_path(path)
        except PathError as exc:
            return opa_error(400, INVALID, str(exc))
        if nested_deeper(input_document, MAX_INPUT_DEPTH):
            return opa_error(400, INVALID, f"input: nested deeper than {MAX_INPUT_DEPTH} levels")
        snapshot = gate.policy.current()
        if snapshot is None:
            return opa_error(503, INTERNAL, "not ready: no verified policy bundle is active")
        try:
            document = input_document if input_document is not None else {}
            result = await evaluate_policy(snapshot, query, document)
        except PolicyEvalError as exc:
            return opa_error(500, INTERNAL, str(exc)[:500])
        body: dict[str, Any] = {"decision_id": sidecar.ids.next()}
        if result is not None:
            body["result"] = result
        if warning is not None:
            body["warning"] = warning
        return JSONResponse(body)

    async def post_data(request: Request) -> Response:
        try:
            document = await _input_from_body(request, sidecar.settings.server.max_body_bytes)
        except _BadRequest as exc:
            return opa_error(400, INVALID, str(exc))
        warning = MISSING_INPUT if document is None else None
        return await evaluate(request.path_params.get("path", ""), document, warning)

    async def get_data(request: Request) -> Response:
        raw = request.query_params.get("input")
        try:
            document = None if raw is None else json.loads(raw)
        except (ValueError, RecursionError):
            return opa_error(400, INVALID, "input query parameter: not valid JSON")
        return await evaluate(request.path_params.get("path", ""), document)

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
    except ValueError:
        raise _BadRequest("request body: not valid JSON") from None
    except RecursionError:
        raise _BadRequest(f"request body: not valid JSON (nested deeper than {MAX_INPUT_DEPTH})") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body: must be a JSON object like {\"input\": ...}")
    return body.get("input")


def nested_deeper(document: Any, limit: int) -> bool:
    """Whether arrays/objects in `document` nest more than `limit` levels (iterative: no recursion)."""
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False

#!/usr/bin/env python3
"""Fuzz the GraphQL classifier (middleware/graphql.py): HTTP requests (`request_operation`) and WebSocket
frames (`payload_operation`, as a graphql-transport-ws `subscribe` / graphql-ws `start` frame carries it).

Input: one mode byte, then the payload.
  mode % 4 == 0: an HTTP request, `query string \\n body`; method and content type from the mode byte;
  1: a WebSocket frame (JSON text); its `payload` goes to payload_operation;
  2: `document \n operationName`, sent every way a client can: a frame's payload, a JSON body, GET URL
     parameters, an application/graphql body;
  3: a document repeated to about AMPLIFIED_BYTES (the scanner's cost on large documents), sent likewise.
Expected: GraphQLRequestError (status 400, 405 or 413). Properties: the answer is an operation type (or
"unknown" for HTTP: the method decides); a frame is never "unknown"; a document is classified alike
however it is sent (GET refuses a mutation with 405); the scan is linear: no call takes more CPU than
BASE_S + PER_BYTE_S * size (the per-byte figure is 10x the worst measured, instrumented).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, run, time_bound

with atheris.instrument_imports(include=["ig_gate.middleware.graphql"]):
    from ig_gate.middleware.graphql import (
        OPERATION_TYPES,
        UNKNOWN,
        GraphQLRequestError,
        payload_operation,
        request_operation,
    )

LIMIT = 64 * 1024  # graphql.max_document_bytes' default
AMPLIFIED_BYTES = 16 * 1024  # a quadratic scan of this would take ~2.7e8 steps: far past the bound
# ~9x the worst linear cost measured here under instrumentation (2.3 us a byte): room for a busy machine
BASE_S, PER_BYTE_S = 0.05, 20e-6
METHODS = ("POST", "GET", "PUT", "HEAD")
JSON, GRAPHQL = "application/json", "application/graphql"
CONTENT_TYPES = (JSON, GRAPHQL, "application/graphql-response+json; charset=utf-8", "text/plain", "")


def _http(method: str, query_string: bytes, body: bytes, content_type: str) -> None:
    try:
        with time_bound(len(query_string) + len(body), base_s=BASE_S, per_byte_s=PER_BYTE_S):
            kind = request_operation(method, query_string, body, content_type, LIMIT)
    except GraphQLRequestError as exc:
        check(exc.status in (400, 405, 413), f"status {exc.status}")
        return
    check(kind in (*OPERATION_TYPES, UNKNOWN), f"answer {kind!r}")


def _frame(payload: object, size: int) -> None:
    try:
        with time_bound(size, base_s=BASE_S, per_byte_s=PER_BYTE_S):
            kind = payload_operation(payload, LIMIT)  # type: ignore[arg-type]
    except GraphQLRequestError as exc:
        check(exc.status in (400, 413), f"status {exc.status}")
        return
    check(kind in OPERATION_TYPES, f"frame answer {kind!r}")


def _answer(classify: Callable[[], str], size: int) -> str | tuple[str, int]:
    try:
        with time_bound(size, base_s=BASE_S, per_byte_s=PER_BYTE_S):
            return classify()
    except GraphQLRequestError as exc:
        return "refused", exc.status


def _document(document: bytes, operation_name: str | None) -> None:
    """Every way a client can send this document is classified alike (GET refuses a mutation with 405)."""
    text = document.decode("utf-8", "replace")
    if not text:
        return
    payload = {"query": text, "operationName": operation_name}
    body = json.dumps(payload).encode()
    url = urlencode({key: value for key, value in payload.items() if value is not None}).encode()
    answers = {
        "frame": _answer(lambda: payload_operation(payload, LIMIT), len(document)),
        "json": _answer(lambda: request_operation("POST", b"", body, JSON, LIMIT), len(body)),
        "get": _answer(lambda: request_operation("GET", url, None, "", LIMIT), len(url)),
    }
    if operation_name is None:
        plain = text.encode()
        graphql = _answer(lambda: request_operation("POST", b"", plain, GRAPHQL, LIMIT), len(plain))
        answers["graphql"] = graphql
    if answers["json"] == "mutation":
        check(answers.pop("get") == ("refused", 405), "a mutation over GET is not refused with 405")
    check(len(set(answers.values())) == 1, f"classified differently by how it is sent: {answers}")


def test_one_input(data: bytes) -> None:
    mode, payload = (data[0], data[1:]) if data else (2, b"")
    if mode % 4 == 0:
        query_string, _, body = payload.partition(b"\n")
        method = METHODS[mode // 4 % len(METHODS)]
        _http(method, query_string, body, CONTENT_TYPES[mode // 16 % len(CONTENT_TYPES)])
    elif mode % 4 == 1:
        try:
            frame = json.loads(payload)
        except (ValueError, RecursionError):  # the middleware closes the socket: not the classifier's input
            return
        _frame(frame.get("payload") if isinstance(frame, dict) else frame, len(payload))
    elif mode % 4 == 2:
        document, _, name = payload.partition(b"\n")
        _document(document, name.decode("utf-8", "replace") if name else None)
    elif payload:
        _document(payload * max(1, AMPLIFIED_BYTES // len(payload)), None)


if __name__ == "__main__":
    run(test_one_input)

"""Workload-profile labels: read, write, subscription or ingest, from what a request is.

The label lets metrics, autoscaling and rollout checks tell cheap reads from writes,
long-lived subscriptions and bulk ingest. The rules, first match wins:

1. a GraphQL subscription, or any WebSocket connection    -> "subscription"
2. a bulk body (multipart uploads, NDJSON/JSON-lines/JSON-seq, CSV, octet-stream)
   sent with a method that carries a body, or a path under one of `ingest_prefixes`
                                                          -> "ingest"
3. a GraphQL query -> "read"; a GraphQL mutation -> "write"
4. anything else: GET, HEAD, OPTIONS -> "read"; other methods -> "write"
"""

from __future__ import annotations

from typing import Literal

Profile = Literal["read", "write", "subscription", "ingest"]

INGEST_CONTENT_TYPES = frozenset({
    "multipart/form-data",
    "multipart/mixed",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/octet-stream",
    "text/csv",
})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def workload_profile(
    method: str,
    path: str,
    operation_type: str,
    content_type: str | None,
    *,
    websocket: bool = False,
    ingest_prefixes: tuple[str, ...] = (),
) -> Profile:
    """Classify a request; `operation_type` is query|mutation|subscription|unknown (GraphQL sniff)."""
    if websocket or operation_type == "subscription":
        return "subscription"
    method = method.upper()
    if content_type and method not in _READ_METHODS:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type in INGEST_CONTENT_TYPES:
            return "ingest"
    if ingest_prefixes and path.startswith(ingest_prefixes):
        return "ingest"
    if operation_type == "query":
        return "read"
    if operation_type == "mutation":
        return "write"
    return "read" if method in _READ_METHODS else "write"

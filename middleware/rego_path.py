"""Rego references <-> OPA Data API paths: `data.ig.policies["read:x"]` <-> `ig/policies/read:x`."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote

from ig_gate.errors import IgGateError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART = re.compile(r'\.(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<string>"(?:[^"\\]|\\.)*")\]')
MAX_SEGMENTS = 32


class PathError(IgGateError, ValueError):
    """A Data API path or a Rego reference that cannot be converted; the message says what is wrong."""


def query_for_path(path: str) -> str:
    """The Rego reference for a Data API path (`ig/zt/decision` -> `data.ig.zt.decision`; `` -> `data`)."""
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    if len(segments) > MAX_SEGMENTS:
        raise PathError(f"path has more than {MAX_SEGMENTS} segments")
    query = "data"
    for segment in segments:
        if not segment:
            raise PathError("path has an empty segment")
        query += f".{segment}" if _IDENT.fullmatch(segment) else f"[{json.dumps(segment)}]"
    return query


def path_for_query(query: str) -> str:
    """The Data API path for a Rego reference rooted at `data` (PathError for anything else)."""
    if not query.startswith("data"):
        raise PathError(f"{query[:80]!r}: not a reference rooted at data")
    segments, pos = [], 4
    while pos < len(query):
        part = _PART.match(query, pos)
        if part is None:
            raise PathError(f"{query[:80]!r}: unsupported reference syntax at offset {pos}")
        segments.append(part["ident"] or json.loads(part["string"]))
        pos = part.end()
    return "/".join(quote(s, safe="") for s in segments)

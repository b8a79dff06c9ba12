"""GraphQL operation-type sniffing: which kind of operation a request carries, without a full parse.

The document is scanned for its top-level definitions only (strings, comments, selection sets and
variable lists are skipped), so a document that names several operations cannot hide a mutation behind
a leading query: with `operationName` the named operation wins, without it the most sensitive type
present does. Results per (document, operation name) are kept in a bounded LRU, since clients repeat the
same documents.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

OPERATION_TYPES = ("query", "mutation", "subscription")
UNKNOWN = "unknown"
# when a document holds several operation types and no operationName picks one, report the most sensitive
_RANK = {"mutation": 3, "subscription": 2, "query": 1, UNKNOWN: 0}

_TOKEN = re.compile(
    r'(?P<string>"""(?:\\"""|[\s\S])*?"""|"(?:[^"\\\n]|\\.)*")'
    r"|#[^\n\r]*"
    r"|(?P<punct>[{}()])"
    r"|[@$][_A-Za-z][_0-9A-Za-z]*"
    r"|(?P<name>[_A-Za-z][_0-9A-Za-z]*)"
)


class GraphQLRequestError(ValueError):
    """The request claims to carry GraphQL (JSON or application/graphql) but its body cannot be read."""


def is_json(content_type: str) -> bool:
    """True for application/json and any +json media type (parameters ignored)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def is_graphql_body(content_type: str) -> bool:
    """True for bodies whose operation type can be sniffed: JSON or application/graphql."""
    return is_json(content_type) or content_type.partition(";")[0].strip().lower() == "application/graphql"


def operation_type(
    method: str, path: str, query_string: bytes | str, body: bytes | None, content_type: str
) -> str:
    """'query' | 'mutation' | 'subscription' | 'unknown' for an HTTP request.

    GET reads the `query` / `operationName` URL parameters; other methods read a JSON body (one request
    or a batch) or an application/graphql body. Raises GraphQLRequestError for an unreadable body.
    """
    if method == "GET":
        if isinstance(query_string, bytes):
            query_string = query_string.decode("latin-1")
        if "query=" not in query_string:
            return UNKNOWN
        params = dict(parse_qsl(query_string))
        return _document_type(params.get("query"), params.get("operationName"))
    if not body or not content_type:
        return UNKNOWN
    if not is_json(content_type):
        if content_type.partition(";")[0].strip().lower() == "application/graphql":
            return _document_type(_text(body), None)
        return UNKNOWN
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError; absurdly deep nesting
        raise GraphQLRequestError(f"request body is not valid JSON ({exc.__class__.__name__})") from None
    if isinstance(payload, list):
        return _most_sensitive(_payload_type(item) for item in payload)
    return _payload_type(payload)


def _payload_type(payload: Any) -> str:
    if not isinstance(payload, dict):
        return UNKNOWN
    query, name = payload.get("query"), payload.get("operationName")
    if query is not None and not isinstance(query, str):
        raise GraphQLRequestError("'query' in the request body must be a string")
    return _document_type(query, name if isinstance(name, str) else None)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise GraphQLRequestError("application/graphql body is not UTF-8") from None


def _most_sensitive(types: Iterable[str]) -> str:
    return max(types, key=_RANK.__getitem__, default=UNKNOWN)


def _document_type(document: str | None, operation_name: str | None) -> str:
    if not document:
        return UNKNOWN
    return _scan(document, operation_name)


@functools.lru_cache(maxsize=4096)
def _scan(document: str, operation_name: str | None) -> str:
    operations = _operations(document)
    if operation_name is not None:
        for kind, name in operations:
            if name == operation_name:
                return kind
        return UNKNOWN
    return _most_sensitive(kind for kind, _ in operations)


def _operations(document: str) -> list[tuple[str, str | None]]:
    """(type, name) of every top-level operation definition; the shorthand `{...}` is an anonymous query."""
    found: list[tuple[str, str | None]] = []
    depth = 0
    kind: str | None = None  # keyword of the definition being read at depth 0
    name: str | None = None
    named = False
    for match in _TOKEN.finditer(document):
        punct = match.group("punct")
        if punct is not None:
            if punct in "{(":
                if depth == 0 and punct == "{":
                    if kind is None:
                        kind = "query"
                    if kind in OPERATION_TYPES:
                        found.append((kind, name))
                depth += 1
            elif depth > 0:
                depth -= 1
                if depth == 0 and punct == "}":
                    kind, name, named = None, None, False
            continue
        word = match.group("name")
        if word is None or depth > 0:
            continue
        if kind is None:
            kind = word
        elif not named:
            name, named = word, True
    return found

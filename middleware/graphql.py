"""GraphQL classification: the operation type a request will execute, read the way a GraphQL server reads it.

Only requests to the configured GraphQL paths (`graphql.paths`) are classified; everywhere else the HTTP
method decides (profile.py). On a GraphQL path:

- URL parameters are decoded as servers decode them (`urllib.parse.parse_qsl`, as Starlette does: names
  and values percent-decoded, `+` is a space); a repeated `query` or `operationName` is a 400 and a
  mutation sent with GET or HEAD is a 405 (GraphQL-over-HTTP). A body does not hide URL parameters: some
  servers prefer them, so both count.
- A JSON body is one request or a batch; the most sensitive operation of a batch decides. An
  `application/graphql` body is a document.
- A document with several operations needs `operationName` (else 400), and the named operation must
  exist (else 400). A document longer than `max_document_bytes` is a 413.

The scanner reads only the top-level definitions in one forward pass: every step matches a run of one
character class (or a fixed token) anchored at the current position and moves past it, so the work is
linear in the document's length, however it is crafted (no step ever rescans what an earlier one read).
`Classifier` caches request kinds keyed by a BLAKE2b digest of what was sent, never by the document; the
gate asks it only once the bearer token has been verified.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ig_gate.errors import IgGateError
from ig_gate.middleware.bounded import FIFO
from ig_gate.middleware.profile import workload_profile

OPERATION_TYPES = ("query", "mutation", "subscription")
UNKNOWN = "unknown"
# when a batch holds several operation types, report the most sensitive
_RANK = {"mutation": 3, "subscription": 2, "query": 1, UNKNOWN: 0}
_GET_METHODS = frozenset({"GET", "HEAD"})  # Starlette (and most servers) answer HEAD with the GET handler

# One step of the scanner at depth 0: skip what cannot start a definition keyword or name, then the token.
_TOP_SKIP = re.compile(r'[^"#{}()_A-Za-z@$]*+')
# Inside braces or parentheses only strings, comments and brackets matter.
_DEEP_SKIP = re.compile(r'[^"#{}()]*+')
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*+")
_SIGIL_NAME = re.compile(r"[@$][_0-9A-Za-z]*+")  # directives and variables: never a definition's name
_OPENERS = re.compile(r"[{(]++")
_CLOSERS = re.compile(r"[})]++")
_COMMENT = re.compile(r"#[^\n\r]*+")
_STRING = re.compile(r'"(?:[^"\\\n\r]++|\\[^\n\r])*+"')


class GraphQLRequestError(IgGateError, ValueError):
    """A GraphQL request the gate cannot classify. `status`: 400 (unreadable or ambiguous), 405 (mutation
    over GET), 413 (document longer than the bound); the message is safe to show."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def is_json(content_type: str) -> bool:
    """True for application/json and any +json media type (parameters ignored)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def is_graphql_body(content_type: str) -> bool:
    """True for bodies whose operation type is read on a GraphQL path: JSON or application/graphql."""
    return is_json(content_type) or content_type.partition(";")[0].strip().lower() == "application/graphql"


_COMMON_BODY_TYPES = frozenset({
    b"application/json", b"application/json; charset=utf-8", b"application/graphql"
})  # fmt: skip


def is_graphql_content_type(value: bytes) -> bool:
    """is_graphql_body() for a raw Content-Type header value (the common ones without decoding)."""
    return value in _COMMON_BODY_TYPES or is_graphql_body(value.decode("latin-1"))


def payload_operation(payload: Mapping[str, Any], max_document_bytes: int) -> str:
    """'query' | 'mutation' | 'subscription' of one GraphQL request payload (`query`, `operationName`), as
    a graphql-transport-ws `subscribe` or graphql-ws `start` frame carries it.

    GraphQLRequestError (status 400, or 413 beyond `max_document_bytes`) for anything unreadable: no
    document, a document without an operation, several operations and no `operationName`, an unknown one.
    """
    if not isinstance(payload, Mapping):
        raise GraphQLRequestError("a GraphQL payload must be an object")
    kind = _payload_type(payload, max_document_bytes)
    if kind == UNKNOWN:
        raise GraphQLRequestError("the GraphQL payload carries no document ('query')")
    return kind


def request_operation(
    method: str, query_string: bytes | str, body: bytes | None, content_type: str, max_document_bytes: int
) -> str:
    """'query' | 'mutation' | 'subscription' | 'unknown' (nothing to classify: the method decides) for an
    HTTP request to a GraphQL path; GraphQLRequestError (400/405/413) when it cannot be classified."""
    kind = UNKNOWN
    document, name = _url_parameters(query_string) if query_string else (None, None)
    if document is not None:
        kind = _document_type(document, name or None, max_document_bytes)
        if kind == "mutation" and method in _GET_METHODS:
            raise GraphQLRequestError("a mutation cannot be sent with GET; use POST", 405)
    if body and method not in _GET_METHODS and is_graphql_body(content_type):
        # servers differ in which one wins (some take the URL's operationName over the body's)
        if document is not None or name is not None:
            raise GraphQLRequestError("GraphQL parameters in both the URL and the body; send them in one")
        kind = _body_type(body, content_type, max_document_bytes)
    return kind


class Classifier:
    """The GraphQL paths, the document bound, and a bounded cache of request kinds keyed by a digest."""

    def __init__(self, paths: Iterable[str], max_document_bytes: int, cache_size: int = 4096) -> None:
        self.paths = frozenset(paths)
        self.max_document_bytes = max_document_bytes
        self._cache: FIFO[bytes, tuple[str, str]] = FIFO(cache_size)  # lock-free reads, oldest evicted first

    def is_graphql(self, path: str) -> bool:
        """Whether requests to `path` are GraphQL requests (exact match with a configured path)."""
        return path in self.paths

    def kind(
        self, method: str, query_string: bytes | str, body: bytes | None, content_type: str
    ) -> tuple[str, str]:
        """(request_operation(), workload profile) of a request to a GraphQL path, remembered by a
        BLAKE2b-128 digest of method, content type, URL query and body. Call it only for authenticated
        requests: what it remembers must not be an attacker's."""
        if not query_string and not body:
            return UNKNOWN, workload_profile(method, "", UNKNOWN, content_type)
        if isinstance(query_string, str):  # the coprocessor's (from JSON): any character
            query_string = query_string.encode("utf-8", "surrogatepass")
        body = body or b""
        method_bytes, media = method.encode("utf-8", "surrogatepass"), content_type.encode("latin-1")
        sent = b"%d:%s%d:%s%d:%s%s" % (
            len(method_bytes),
            method_bytes,
            len(media),
            media,
            len(query_string),
            query_string,
            body,
        )
        key = hashlib.blake2b(sent, digest_size=16).digest()
        try:
            return self._cache[key]
        except KeyError:
            pass
        op = request_operation(method, query_string, body, content_type, self.max_document_bytes)
        kind = op, workload_profile(method, "", op, content_type)
        self._cache[key] = kind
        return kind


def _url_parameters(query_string: bytes | str) -> tuple[str | None, str | None]:
    """(query, operationName) URL parameters, decoded as a server decodes them; 400 when repeated."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    document = name = None
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key == "query":
            if document is not None:
                raise GraphQLRequestError("the 'query' URL parameter is repeated")
            document = value
        elif key == "operationName":
            if name is not None:
                raise GraphQLRequestError("the 'operationName' URL parameter is repeated")
            name = value
    return document, name


def _body_type(body: bytes, content_type: str, limit: int) -> str:
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/graphql":
        try:
            return _document_type(body.decode("utf-8"), None, limit)
        except UnicodeDecodeError:
            raise GraphQLRequestError("application/graphql body is not UTF-8") from None
    if not is_json(media):
        return UNKNOWN
    try:
        payload = json.loads(body, object_pairs_hook=_unique_keys)
    except GraphQLRequestError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError; absurdly deep nesting
        raise GraphQLRequestError(f"request body is not valid JSON ({exc.__class__.__name__})") from None
    if isinstance(payload, list):
        if not payload:
            raise GraphQLRequestError("an empty batch")
        for item in payload:
            if not isinstance(item, dict):
                raise GraphQLRequestError("every request in a batch must be an object")
        return _most_sensitive(_payload_type(item, limit) for item in payload)
    if not isinstance(payload, dict):
        raise GraphQLRequestError("the request body must be a JSON object or an array of them")
    return _payload_type(payload, limit)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it repeats a key (parsers disagree about which one wins)."""
    built = dict(pairs)
    if len(built) != len(pairs):
        raise GraphQLRequestError("a JSON object in the request body repeats a key")
    return built


def _payload_type(payload: Mapping[str, Any], limit: int) -> str:
    document, name = payload.get("query"), payload.get("operationName")
    if document is not None and not isinstance(document, str):
        raise GraphQLRequestError("'query' must be a string")
    if name is not None and not isinstance(name, str):
        raise GraphQLRequestError("'operationName' must be a string")
    if not document:  # a persisted-query hash alone: nothing to read, the method decides
        return UNKNOWN
    return _document_type(document, name or None, limit)


def _most_sensitive(types: Iterable[str]) -> str:
    return max(types, key=_RANK.__getitem__, default=UNKNOWN)


def _document_type(document: str, operation_name: str | None, limit: int) -> str:
    size = len(document)  # characters; UTF-8 takes up to 4 bytes each, so encode only when it may matter
    if size > limit or (size * 4 > limit and len(document.encode("utf-8", "surrogatepass")) > limit):
        raise GraphQLRequestError(f"GraphQL document longer than {limit} bytes", 413)
    operations = _operations(document)
    if not operations:
        raise GraphQLRequestError("the GraphQL document defines no operation")
    if operation_name is None:
        if len(operations) > 1:
            raise GraphQLRequestError("the document defines several operations: operationName is required")
        return operations[0][0]
    named = [kind for kind, name in operations if name == operation_name]
    if not named:
        raise GraphQLRequestError("operationName does not name an operation of the document")
    return _most_sensitive(named)


def _operations(document: str) -> list[tuple[str, str | None]]:
    """(type, name) of every top-level operation definition; the shorthand `{...}` is an anonymous query.

    One forward pass; GraphQLRequestError for an unterminated string or unbalanced brackets."""
    found: list[tuple[str, str | None]] = []
    depth = pos = 0
    end = len(document)
    kind: str | None = None  # keyword of the definition being read at depth 0
    name: str | None = None
    while True:
        pos = (_DEEP_SKIP if depth else _TOP_SKIP).match(document, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            break
        char = document[pos]
        if char in "{(":
            if depth == 0 and char == "{":
                if kind is None:
                    kind = "query"
                if kind in OPERATION_TYPES:
                    found.append((kind, name))
            step = _OPENERS.match(document, pos).end()  # type: ignore[union-attr]
            depth += step - pos
        elif char in "})":
            step = _CLOSERS.match(document, pos).end()  # type: ignore[union-attr]
            depth -= step - pos
            if depth < 0:
                raise GraphQLRequestError("the GraphQL document has an unbalanced '}' or ')'")
            if depth == 0 and document[step - 1] == "}":
                kind = name = None
        elif char == '"':
            step = _string_end(document, pos)
        elif char == "#":
            step = _COMMENT.match(document, pos).end()  # type: ignore[union-attr]
        elif char in "@$":
            step = _SIGIL_NAME.match(document, pos).end()  # type: ignore[union-attr]
        else:  # a name at depth 0: the definition's keyword, then its name
            step = _NAME.match(document, pos).end()  # type: ignore[union-attr]
            if kind is None:
                kind = document[pos:step]
            elif name is None and kind in OPERATION_TYPES:
                name = document[pos:step]
        pos = step
    if depth:
        raise GraphQLRequestError("the GraphQL document has an unclosed '{' or '('")
    return found


def _string_end(document: str, pos: int) -> int:
    """The position after the string that starts at `pos` (block strings: `\"\"\"` escapes only `\"\"\"`)."""
    if document.startswith('"""', pos):
        search = pos + 3
        while True:
            close = document.find('"""', search)
            if close < 0:
                break
            if document[close - 1] != "\\":
                return close + 3
            search = close + 3
    else:
        match = _STRING.match(document, pos)
        if match is not None:
            return match.end()
    raise GraphQLRequestError("the GraphQL document has an unterminated string")

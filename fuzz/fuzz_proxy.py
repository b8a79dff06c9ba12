#!/usr/bin/env python3
"""Fuzz the reverse proxy's handling of client requests: the path normalisation the middleware applies
first (middleware/paths.py `normalise_scope`), then sidecar/proxy.py's `_request_framing`, the request
head it writes from `upstream_headers`, and the body framing of `_exchange` / `_upload`.

Input: the bytes a client sends. They are parsed with httptools and turned into an ASGI scope exactly as
uvicorn's httptools protocol does (what it refuses, a server answers 400: not our input). The path is
normalised as ZeroTrustMiddleware does (AmbiguousPath is its 400). The proxy's upstream request is then
built from that scope, both ways it can go: the body arrived whole (framed with its Content-Length) or
streams (the client's Content-Length, else chunked). The upstream request is parsed again with h11 and
httptools, as two different upstream servers would.
Expected: AmbiguousPath from the normalisation; nothing else raises. Properties (smuggling, side doors):
- normalising is idempotent, and the path the gate judges is the one the upstream resolves: the target
  percent-decoded, slashes merged and dot segments removed (as nginx resolves it) is the gate's path;
- each upstream parser sees exactly one request: the client's method and body, nothing left over;
- the target is the upstream base path + the client's raw path and query;
- one Host (the upstream's); no hop-by-hop or Proxy-* header, no header the client's Connection names,
  no Expect; X-Forwarded-For ends with the client's address;
- no client header reaches the upstream whose normalised name (lower case, `_` -> `-`) is an identity
  header `x-auth-*`, hop-by-hop, Proxy-* or one the proxy sets (X-Forwarded-*, Host): CGI/WSGI-style
  upstreams read `X_Auth_Subject` as `X-Auth-Subject`.
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import atheris
import h11
import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, run

with atheris.instrument_imports(include=["ig_gate.sidecar.proxy", "ig_gate.middleware.paths"]):
    from ig_gate.middleware.paths import AmbiguousPath, normalise_raw, normalise_scope
    from ig_gate.sidecar import proxy

PROXIES = [  # server.allow_underscore_headers off (the default) and on
    proxy.ReverseProxy("http://upstream.internal:8080/base", allow_underscore_headers=allowed)
    for allowed in (False, True)
]
CLIENT = ("203.0.113.9", 40000)
SET_BY_PROXY = {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
HOP_BY_HOP = {b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"expect", b"transfer-encoding"}


class _Request:
    """httptools callbacks collecting the first request, as uvicorn's HttpToolsProtocol does (pipelined
    requests after it are another scope)."""

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | None = None
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        if not self.done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        if not self.done and self.parser is not None:
            self.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def client_request(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(ASGI scope, body) of the first complete request in data, or None where uvicorn answers 400."""
    request = _Request()
    parser = request.parser = httptools.HttpRequestParser(request)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return None  # a WebSocket or h2c upgrade: not the HTTP proxy path
    except httptools.HttpParserError:
        return None
    if not request.done:
        return None
    try:
        url = httptools.parse_url(request.url)
        path = url.path.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        return None
    scope = {
        "type": "http", "method": request.method.decode("ascii"), "scheme": "http", "client": CLIENT,
        "path": urllib.parse.unquote(path) if "%" in path else path, "raw_path": url.path,
        "query_string": url.query or b"", "headers": request.headers, "state": {},
    }  # fmt: skip
    return scope, request.body


def resolved(target: bytes) -> str:
    """The path an upstream such as nginx resolves from a request target: percent-decoded, repeated
    slashes merged, dot segments removed (RFC 3986 §5.2.4)."""
    path = urllib.parse.unquote(target.partition(b"?")[0].decode("latin-1"))
    segments: list[str] = []
    for segment in re.sub("//+", "/", path).split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    trailing = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(segments) + trailing


def upstream_requests(reverse_proxy: Any, scope: dict[str, Any], body: bytes) -> list[bytes]:
    """The upstream request bytes: the body arrived whole, and the body streamed (sidecar/proxy.py)."""
    head = reverse_proxy._request_head(scope)
    has_body, length = proxy._request_framing(scope["headers"])
    if not has_body:
        return [head + b"\r\n"]
    whole = b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body)
    if length is None:
        streamed = head + b"transfer-encoding: chunked\r\n\r\n" + proxy._chunk(body) + b"0\r\n\r\n"
    else:
        streamed = b"%scontent-length: %s\r\n\r\n%s" % (head, length, body)
    return [whole, streamed]


def parse_h11(raw: bytes) -> tuple[h11.Request, bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")
    request = conn.next_event()
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"h11: the upstream request ends early ({event!r})")
    check(conn.trailing_data == (b"", True), f"h11: bytes after the request: {conn.trailing_data!r}")
    check(isinstance(request, h11.Request), f"h11: not a request: {request!r}")
    return request, body


def parse_httptools(raw: bytes) -> _Request:
    completed = []

    class Counting(_Request):
        def on_message_complete(self) -> None:
            completed.append(True)
            super().on_message_complete()

    request = Counting()
    request.parser = httptools.HttpRequestParser(request)
    request.parser.feed_data(raw)
    check(len(completed) == 1, f"httptools: {len(completed)} requests upstream")
    return request


def check_upstream(raw: bytes, scope: dict[str, Any], body: bytes) -> None:
    request, upstream_body = parse_h11(raw)
    check(request.method.decode() == scope["method"], "method changed")
    check(upstream_body == body, "body changed")
    query = scope["query_string"]
    check(request.target == b"/base" + scope["raw_path"] + (b"?" + query if query else b""), "target changed")
    named = {
        token.strip().lower()
        for name, value in scope["headers"] if name == b"connection" for token in value.split(b",")
    }  # fmt: skip
    names = [name.lower() for name, _ in request.headers]
    check(names.count(b"host") == 1 and dict(request.headers)[b"host"] == b"upstream.internal:8080", "host")
    framing = {b"content-length", b"transfer-encoding"} & set(names)
    check(len(framing) <= 1 and all(names.count(n) == 1 for n in framing), "at most one framing header")
    for name in names:
        norm = name.replace(b"_", b"-")
        check(norm not in HOP_BY_HOP - framing and not norm.startswith(b"proxy-"), f"hop-by-hop {name!r}")
        check(name not in named - SET_BY_PROXY - framing, f"{name!r} is named in Connection")  # not ours
        check(not norm.startswith(b"x-auth-"), f"client identity header {name!r}")
        check(norm not in SET_BY_PROXY or norm == name, f"{name!r} poses as a header the proxy sets")
    forwarded_for = [value for name, value in request.headers if name == b"x-forwarded-for"]
    check(len(forwarded_for) == 1 and forwarded_for[0].endswith(CLIENT[0].encode()), "x-forwarded-for")
    again = parse_httptools(raw)
    check(again.method == request.method and again.body == body, "httptools reads another request")


def test_one_input(data: bytes) -> None:
    parsed = client_request(data)
    if parsed is None:
        return
    scope, body = parsed
    try:
        path = normalise_scope(scope)
    except AmbiguousPath:
        return
    check(normalise_raw(scope["raw_path"]) == scope["raw_path"], "normalising twice changes the path")
    upstream_path = resolved(b"/base" + scope["raw_path"])
    check(upstream_path == "/base" + path, f"the gate judged {path!r}, the upstream reads {upstream_path!r}")
    for reverse_proxy in PROXIES:
        for raw in upstream_requests(reverse_proxy, scope, body):
            check_upstream(raw, scope, body)


if __name__ == "__main__":
    run(test_one_input)

"""Forward-auth: `GET|POST /authz` for proxies that ask before they forward.

Where the original request is described (first match wins):

| proxy                     | method                 | URI (path + query)          |
|---------------------------|------------------------|-----------------------------|
| nginx `auth_request`      | `X-Original-Method`    | `X-Original-URI`            |
| Traefik `forwardAuth`     | `X-Forwarded-Method`   | `X-Forwarded-Uri`           |
| Envoy `ext_authz` (HTTP)  | the request's method   | `/authz<original path>?...` |

A path-prefixed request (`/authz/...`) is Envoy's and its own method and path are the original's: no
header can override them. On bare `/authz`, nginx's and Traefik's headers are both read, since each proxy
passes the client's other headers through (Traefik forwards a client-sent `X-Original-URI`, nginx a
client-sent `X-Forwarded-Uri`): when the two describe different requests, the answer is 400. The original
path is normalised as the middleware normalises it (middleware/paths.py): the gate judges the form the
upstream will resolve, and an ambiguous one (dot segments, an encoded `/` or `\\`) is refused 400 with the
reason `ambiguous_path`.

The original headers (Authorization, device attestation, X-Forwarded-For...) arrive on the auth request
itself. The client IP comes from forwarding headers only when the socket peer is a configured trusted
proxy (`geo.trusted_proxies`), as for the middleware. The original path decides, as in the middleware,
whether the request is GraphQL (`graphql.paths`; elsewhere the method decides). A body is read only when
the proxy forwards one (Envoy `with_request_body`, Traefik `forwardBody`), the original path is a GraphQL
path, the body is JSON/GraphQL, and the bearer token has verified (a bad token is refused unread).

Answers: 200 with `X-Auth-Subject`, `X-Auth-Tenant`, `X-Auth-Risk`, `X-Auth-Decision-Id`; refusals as the
middleware sends them (401 + `WWW-Authenticate`, 403, 400, 413, 503) with a JSON body.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.routing import BaseRoute, Route

from ig_gate.errors import IgGateError
from ig_gate.middleware.decision import BAD_REQUEST, Decision, Identity
from ig_gate.middleware.extract import CONTENT_TYPE, header_map, text
from ig_gate.middleware.gate import GateRequest
from ig_gate.middleware.graphql import is_graphql_body
from ig_gate.middleware.paths import AMBIGUOUS_PATH, AmbiguousPath, normalise_path
from ig_gate.middleware.session import Session
from ig_gate.sidecar.asgi_io import BodyTooLarge, Headers, Receive, Scope, Send, read_body, respond
from ig_gate.sidecar.wiring import Sidecar, SidecarEndpoint

PREFIX = "/authz"
_PREFIX_SLASH = PREFIX.encode("ascii") + b"/"
IDENTITY_HEADER_NAMES = (b"x-auth-subject", b"x-auth-tenant", b"x-auth-risk", b"x-auth-decision-id")
_ESCAPED = frozenset('%\\"')
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in _ESCAPED)
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


def header_value(value: str) -> bytes:
    """A header-safe value: printable ASCII kept, anything else (CR, LF, non-ASCII) percent-encoded."""
    if value.isascii() and value.isprintable() and not _ESCAPED.intersection(value):
        return value.encode("ascii")
    return quote(value, safe=_SAFE).encode("ascii")


def identity_headers(identity: Identity) -> Headers:
    """`X-Auth-*` headers describing an allowed request's verified caller (absent values omitted)."""
    values = (identity.subject, identity.tenant, identity.risk, identity.decision_id)
    return [(name, header_value(v)) for name, v in zip(IDENTITY_HEADER_NAMES, values, strict=True) if v]


class ForwardAuth(SidecarEndpoint):
    """The pure-ASGI forward-auth endpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            method, raw_path, query = _original_request(scope)
        except AmbiguousRequest as exc:
            await respond(send, *self.responses.http(self.sidecar.malformed(str(exc))))
            return
        peer = client[0] if (client := scope.get("client")) else None
        headers = header_map(scope["headers"])
        try:
            path = normalise_path(raw_path)  # judged in the form the proxy's upstream resolves
        except AmbiguousPath as exc:
            request = GateRequest(method, raw_path.decode("latin-1"), query, headers, peer)
            await self._refuse(scope, send, self.gate.refuse(request, BAD_REQUEST, AMBIGUOUS_PATH, str(exc)))
            return
        request = GateRequest(method, path, query, headers, peer)
        session = None
        if (
            scope["method"] not in _BODYLESS
            and self.gate.classifier.is_graphql(path)
            and is_graphql_body(text(headers.get(CONTENT_TYPE)) or "")
        ):
            session = self.gate.authenticate(request)  # before the body is read
            if type(session) is not Session:
                await self._refuse(scope, send, session)
                return
            try:
                body = await read_body(receive, self.max_body_bytes)
            except BodyTooLarge:
                await self._refuse(scope, send, self.gate.refuse_too_large(request, self.max_body_bytes))
                return
            if body is None:
                return
            request = GateRequest(method, path, query, headers, peer, body)
        decision = await self.gate.decide_async(request, session)
        if decision.passes:
            identity = decision.identity
            out = identity_headers(identity) if identity is not None else []
            await respond(send, 200, [(b"cache-control", b"no-store"), *out], b"")
            return
        await self._refuse(scope, send, decision)

    async def _refuse(self, scope: Scope, send: Send, decision: Decision) -> None:
        status, out_headers, payload = self.responses.http(decision)
        await respond(send, status, out_headers, b"" if scope["method"] == "HEAD" else payload)


class AmbiguousRequest(IgGateError, ValueError):
    """nginx's and Traefik's headers describe different original requests (or Envoy's prefix is encoded)."""


def _original_request(scope: Scope) -> tuple[str, bytes, bytes]:
    """(method, raw path, query string) of the request the proxy asks about; AmbiguousRequest when the
    nginx and Traefik headers disagree."""
    if len(scope["path"]) > len(PREFIX):  # Envoy: /authz/<original path>, as it was on the request line
        raw = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
        if not raw.startswith(_PREFIX_SLASH):  # /%61uthz/...: no raw original path to cut out
            raise AmbiguousRequest("the /authz prefix is percent-encoded")
        return scope["method"], raw[len(PREFIX) :], scope["query_string"]
    nginx_method = nginx_uri = traefik_method = traefik_uri = None
    for name, value in scope["headers"]:
        if name == b"x-original-uri":
            nginx_uri = value
        elif name == b"x-original-method":
            nginx_method = value
        elif name == b"x-forwarded-uri":
            traefik_uri = value
        elif name == b"x-forwarded-method":
            traefik_method = value
    if None not in (nginx_uri, traefik_uri) and nginx_uri != traefik_uri:
        raise AmbiguousRequest("X-Original-URI and X-Forwarded-Uri name different requests")
    methods = {_method(m, scope) for m in (nginx_method, traefik_method) if m is not None}
    if len(methods) > 1:
        raise AmbiguousRequest("X-Original-Method and X-Forwarded-Method name different methods")
    uri = nginx_uri if nginx_uri is not None else traefik_uri
    method = nginx_method if nginx_method is not None else traefik_method
    if uri is None:
        return _method(method, scope), b"/", scope["query_string"]
    path, _, query = uri.partition(b"?")
    return _method(method, scope), path or b"/", query


def _method(value: bytes | None, scope: Scope) -> str:
    if value is None:
        return scope["method"]
    return value.decode("latin-1").strip().upper() or scope["method"]


def routes(sidecar: Sidecar) -> list[BaseRoute]:
    """`/authz` and `/authz/{path}` (Envoy's path-prefixed form), every method Envoy may forward."""
    endpoint = ForwardAuth(sidecar)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route(PREFIX, endpoint, methods=methods),
        Route(PREFIX + "/{path:path}", endpoint, methods=methods),
    ]

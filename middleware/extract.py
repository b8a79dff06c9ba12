"""Read what the gate needs from request headers: one dict of the raw header bytes, the bearer token.

`header_map()` turns ASGI raw pairs (or a str mapping, as the sidecar has) into `{lower-case name: value}`
in one C-level `dict()` call; only a request that repeats a header takes the slow path, which joins
repeated forwarding headers and cookies and marks a repeated Authorization header as malformed.
Malformed credentials raise `MalformedRequest` (400, with an RFC 6750 `invalid_request` challenge when
`auth` is set); an Authorization header with another scheme counts as no bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ig_gate.errors import IgGateError

RawHeaders = Iterable[tuple[bytes, bytes]]
MAX_TOKEN_BYTES = 8192
MAX_ATTESTATION_BYTES = 8192
AUTHORIZATION = b"authorization"
COOKIE = b"cookie"
CONTENT_TYPE = b"content-type"
CONTENT_LENGTH = b"content-length"
TRANSFER_ENCODING = b"transfer-encoding"
X_FORWARDED_FOR = b"x-forwarded-for"
FORWARDED = b"forwarded"
PURPOSE = b"x-purpose"
_REPEATED = b"\0repeated"  # marks a repeated Authorization header (never a valid value)
_JOIN = {X_FORWARDED_FOR: b",", FORWARDED: b",", COOKIE: b"; "}
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_LABEL = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # tenant header, purpose header
_TOKEN_CACHE_SIZE = 4096


class HeaderMap(dict[bytes, bytes]):
    """Request headers as {lower-case name: raw value}, repeated headers already resolved."""


class MalformedRequest(IgGateError):
    """A header or body the gate cannot read; becomes a 400 decision. `detail` is safe to show."""

    def __init__(self, detail: str, *, auth: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.auth = auth  # a malformed credential: RFC 6750 invalid_request challenge


def header_map(raw: RawHeaders | Mapping[str, str] | Mapping[bytes, bytes]) -> HeaderMap:
    """A HeaderMap from ASGI raw pairs or a str mapping (any case); a HeaderMap is returned as is."""
    kind = type(raw)
    if kind is list:  # ASGI servers and the TestClient pass a list
        headers = HeaderMap(raw)  # type: ignore[arg-type]
        return headers if len(headers) == len(raw) else _merged(raw)  # type: ignore[arg-type]
    if kind is HeaderMap:
        return raw  # type: ignore[return-value]
    if isinstance(raw, Mapping):
        pairs = getattr(raw, "raw", None)  # starlette's Headers keeps the raw pairs, repeats included
        if isinstance(pairs, list):
            return header_map(pairs)
        return header_map(
            [
                (str(k).lower().encode("latin-1", "replace"), str(v).encode("utf-8", "replace"))
                for k, v in raw.items()
            ]
        )
    return header_map(list(raw))


def _merged(pairs: Iterable[tuple[bytes, bytes]]) -> HeaderMap:
    headers = HeaderMap()
    for name, value in pairs:
        previous = headers.get(name)
        if previous is None:
            headers[name] = value
        elif name == AUTHORIZATION:
            headers[name] = _REPEATED
        elif name in _JOIN:
            headers[name] = previous + _JOIN[name] + value
        # any other repeated header: the first one counts, as Starlette's Headers.get reads it
    return headers


class TokenReader:
    """The bearer token from Authorization, else from the configured cookie. The Authorization value of a
    token that verified is remembered (`verified`), so its syntax is not checked again; nothing else is."""

    def __init__(self, cookie: str | None) -> None:
        self._cookie = cookie.encode("latin-1") if cookie else None
        self._seen: dict[bytes, str] = {}  # Authorization value -> token (well-formed ones only)

    def token(self, headers: HeaderMap) -> str | None:
        """The token, None when there is none; MalformedRequest for malformed credentials."""
        raw = headers.get(AUTHORIZATION)
        if raw is not None:
            try:
                return self._seen[raw]
            except KeyError:
                pass
            if raw is _REPEATED:
                raise MalformedRequest("more than one Authorization header", auth=True)
            credentials = _bearer(raw)
            if credentials is not None:
                return _checked_token(credentials, "Authorization: Bearer credentials")
        cookie = headers.get(COOKIE)
        if self._cookie is not None and cookie is not None:
            value = _cookie_value(cookie, self._cookie)
            if value:  # an empty cookie (as a logout leaves it) is no token
                return _checked_token(value, "token cookie")
        return None

    def verified(self, headers: HeaderMap, token: str) -> None:
        """`token`, read from these headers, verified: remember its Authorization value (bounded) when the
        token came from there (not from the cookie beside another scheme)."""
        raw = headers.get(AUTHORIZATION)
        if raw is not None and raw not in self._seen and _bearer(raw) == token.encode("ascii"):
            if len(self._seen) >= _TOKEN_CACHE_SIZE:
                self._seen.clear()
            self._seen[raw] = token


def text(value: bytes | None) -> str | None:
    """A header value as str (latin-1, never fails)."""
    return None if value is None else value.decode("latin-1")


def ascii_or_none(value: bytes | None, limit: int = MAX_ATTESTATION_BYTES) -> str | None:
    """An ASCII header value within limit, else None (treated as absent)."""
    if value is None or len(value) > limit or not value.isascii():
        return None
    return value.decode("ascii").strip() or None


def label(value: bytes | None, what: str) -> str | None:
    """An identifier-like header value (tenant, purpose); MalformedRequest when it is not one."""
    if value is None:
        return None
    value = value.strip()
    if not _LABEL.fullmatch(value):
        raise MalformedRequest(f"{what} must be 1-64 characters of [A-Za-z0-9_.:-]")
    return value.decode("ascii")


def _bearer(authorization: bytes) -> bytes | None:
    """The credentials of a Bearer Authorization value, None for another scheme."""
    scheme, _, credentials = authorization.strip().partition(b" ")
    return credentials.strip() if scheme.lower() == b"bearer" else None


def _checked_token(value: bytes, what: str) -> str:
    if len(value) > MAX_TOKEN_BYTES:
        raise MalformedRequest(f"{what}: longer than {MAX_TOKEN_BYTES} bytes", auth=True)
    if not _B64TOKEN.fullmatch(value):
        raise MalformedRequest(f"{what}: not a well-formed bearer token", auth=True)
    return value.decode("ascii")


def _cookie_value(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            value = value.strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            return value
    return None

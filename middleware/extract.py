"""Extract what the gate reads from request headers: bearer token, forwarding headers, device
attestation, tenant and purpose headers, content type. One pass over ASGI raw header pairs.

Malformed credentials raise `MalformedRequest` (a 400, with an RFC 6750 `invalid_request` challenge when
`auth` is set); an Authorization header with another scheme counts as no bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RawHeaders = Iterable[tuple[bytes, bytes]]
MAX_TOKEN_BYTES = 8192
MAX_ATTESTATION_BYTES = 8192
PURPOSE_HEADER = b"x-purpose"
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_LABEL = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # tenant header, purpose header


class MalformedRequest(Exception):
    """A header or body the gate cannot read; becomes a 400 decision. `detail` is safe to show."""

    def __init__(self, detail: str, *, auth: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.auth = auth  # a malformed credential: RFC 6750 invalid_request challenge


@dataclass(slots=True)
class Extracted:
    """The raw values of the few headers the gate reads (repeated forwarding headers joined)."""

    authorization: bytes | None = None
    cookie: bytes | None = None
    forwarded_for: bytes | None = None
    forwarded: bytes | None = None
    device: bytes | None = None
    tenant: bytes | None = None
    purpose: bytes | None = None
    content_type: bytes | None = None


class HeaderReader:
    """Reads the gate's headers; built once with the configured header and cookie names."""

    def __init__(self, device_header: str, tenant_header: str | None, cookie: str | None) -> None:
        self._device = device_header.lower().encode("latin-1")
        self._tenant = tenant_header.lower().encode("latin-1") if tenant_header else None
        self._cookie = cookie.encode("latin-1") if cookie else None

    def read(self, raw: RawHeaders | Mapping[str, str]) -> Extracted:
        """One pass over the headers (ASGI raw pairs with lower-case names, or a str mapping)."""
        found = Extracted()
        for name, value in _pairs(raw) if isinstance(raw, Mapping) else raw:
            if name == b"authorization":
                if found.authorization is not None:
                    raise MalformedRequest("more than one Authorization header", auth=True)
                found.authorization = value
            elif name == b"cookie":
                found.cookie = value if found.cookie is None else found.cookie + b"; " + value
            elif name == b"x-forwarded-for":
                found.forwarded_for = _joined(found.forwarded_for, value)
            elif name == b"forwarded":
                found.forwarded = _joined(found.forwarded, value)
            elif name == b"content-type":
                if found.content_type is None:  # the first one, as Starlette and the middleware read it
                    found.content_type = value
            elif name == self._device:
                found.device = value
            elif name == self._tenant:
                found.tenant = value
            elif name == PURPOSE_HEADER:
                found.purpose = value
        return found

    def token(self, found: Extracted) -> str | None:
        """The bearer token from Authorization, else from the configured cookie; None when absent."""
        raw = found.authorization
        if raw is not None:
            scheme, _, credentials = raw.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return _checked_token(credentials.strip(), "Authorization: Bearer credentials")
        if self._cookie is not None and found.cookie is not None:
            value = _cookie_value(found.cookie, self._cookie)
            if value is not None:
                return _checked_token(value, "token cookie")
        return None


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


def _joined(previous: bytes | None, value: bytes) -> bytes:
    return value if previous is None else previous + b"," + value


def _pairs(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (k.lower().encode("latin-1", "replace"), v.encode("utf-8", "replace")) for k, v in headers.items()
    ]


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

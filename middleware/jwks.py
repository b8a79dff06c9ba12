"""JSON Web Key Sets from a file or an HTTPS URL, and JWT verification against them.

A URL set is fetched and refreshed by a background thread (every `refresh_s`, and once more,
rate-limited by `min_refresh_interval_s`, when a token names an unknown `kid`); `key()` never does
network I/O on the calling thread. A failed fetch keeps the keys already in force.
URLs must be https. Plain http is refused unless `allow_http_loopback=True` AND the host is a loopback
address (127.0.0.0/8, ::1, localhost) — for local development and tests only.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt

from ig_gate.errors import IgGateError
from ig_gate.middleware.jws import JWTExpired, JWTRejected, VerifyingKey, loads, strict_header, verify_compact

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_CHARS = 16_384
_REQUIRED_TIME_CLAIMS = ("exp",)
_RETRY_FLOOR_S = 1.0


class JWKSError(IgGateError, ValueError):
    """A key set cannot be loaded: unreadable file, bad JSON, no usable key, refused URL."""

    label = "unusable key set"


# JWTExpired and JWTRejected live in jws, where tokens are checked
__all__ = ["JWKSError", "JWKSet", "JWTExpired", "JWTRejected"]


class JWKSet:
    """Keys by `kid`, parsed once into PyJWK objects (and prepared for verification once); a single-key set
    also matches a token without kid."""

    def __init__(
        self,
        keys: Iterable[Mapping[str, Any]],
        *,
        source: str = "inline",
        fetch: Callable[[], bytes] | None = None,
        refresh_s: float = 300.0,
        min_refresh_interval_s: float = 30.0,
        on_refresh: Callable[[bool], None] | None = None,
    ) -> None:
        self._source = source
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._min_interval = min_refresh_interval_s
        self._on_refresh = on_refresh
        # (by kid, the single key or None): replaced as one value, so readers never see half an update
        self._keys: tuple[dict[str, VerifyingKey], VerifyingKey | None] = ({}, None)
        self._count = 0
        self._loaded_at: float | None = None
        self._ok = 0
        self._failed = 0
        self._last_error: str | None = None
        self._last_attempt = -math.inf
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        if fetch is None:
            self._install(_parse_keys(list(keys), source))

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_keys(cls, keys: Sequence[Mapping[str, Any]]) -> JWKSet:
        """A fixed set from JWK dicts (raises JWKSError when none is usable)."""
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | Path) -> JWKSet:
        """A fixed set read once from a JWKS file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise JWKSError(f"{path}: cannot read JWKS: {exc.strerror}") from None
        return cls(_keys_of(data, str(path)), source=str(path))

    @classmethod
    def from_url(
        cls,
        url: str,
        refresh_s: float = 300.0,
        min_refresh_interval_s: float = 30.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | Path | None = None,
        allow_http_loopback: bool = False,
        timeout_s: float = 5.0,
        on_refresh: Callable[[bool], None] | None = None,
    ) -> JWKSet:
        """A set fetched from url by a background thread; call start() (and close() when done)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "http":
            if not (allow_http_loopback and _is_loopback(parsed.hostname)):
                raise JWKSError(f"{url}: JWKS URLs must be https (plain http only for loopback when enabled)")
        elif parsed.scheme != "https" or not parsed.hostname:
            raise JWKSError(f"{url}: JWKS URLs must be https://host/...")
        context = ssl_context or ssl.create_default_context(cafile=str(cafile) if cafile else None)
        port = f":{parsed.port}" if parsed.port else ""
        safe_url = parsed._replace(netloc=parsed.hostname + port).geturl()  # without user:password@

        def fetch() -> bytes:
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
                if urllib.parse.urlsplit(response.geturl()).scheme != parsed.scheme:
                    raise JWKSError(f"{safe_url}: redirected to another scheme")
                body = response.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise JWKSError(f"{safe_url}: JWKS larger than {MAX_JWKS_BYTES} bytes")
            return body

        return cls(
            (), source=safe_url, fetch=fetch, refresh_s=refresh_s,
            min_refresh_interval_s=min_refresh_interval_s, on_refresh=on_refresh,
        )

    @classmethod
    def from_source(cls, source: str, **url_options: Any) -> JWKSet:
        """from_url for `https://` / `http://` sources (url_options passed on), else from_file."""
        if "://" in source:
            return cls.from_url(source, **url_options)
        return cls.from_file(source)

    # -- the hot path ---------------------------------------------------------------------------

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for kid (a single-key set also answers kid=None); an unknown kid schedules a refresh."""
        verifying = self._verifying_key(kid)
        return None if verifying is None else verifying.jwk

    def _verifying_key(self, kid: str | None) -> VerifyingKey | None:
        by_kid, single = self._keys
        if kid is None:
            return single
        try:
            return by_kid[kid]
        except KeyError:
            if self._fetch is not None:
                self._wake.set()
            return None

    def decode(
        self,
        token: str,
        *,
        algorithms: Sequence[str],
        now: float,
        leeway: float = 0.0,
        issuer: str | None = None,
        audience: str | None = None,
        require: Sequence[str] = _REQUIRED_TIME_CLAIMS,
    ) -> dict[str, Any]:
        """Verify token's signature with this set and its claims at `now`; the claims, or JWTRejected.

        Only `algorithms` are accepted, and only when the key's own algorithm is the token's (so an HS*
        token is never checked with a public key); `none` never. exp/nbf/iat are checked with `now`.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise JWTRejected("token malformed")
        parsed = strict_header(token)  # as verify_compact reads it; a broken one fails there, later
        header = parsed if parsed is not None else _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in algorithms or alg.lower() == "none":
            raise JWTRejected("signing algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JWTRejected("token malformed (kid)")
        key = self._verifying_key(kid)
        if key is None:
            raise JWTRejected("signing key unknown")
        if key.algorithm_name != alg:
            raise JWTRejected("signing algorithm does not match the key")
        try:
            claims = verify_compact(
                token, key, issuer=issuer, audience=audience, require=require, header=parsed
            )
        except JWTRejected:
            raise
        except Exception:  # whatever else a broken token makes the crypto layer raise
            raise JWTRejected("token invalid") from None
        _check_times(claims, now, leeway)
        return claims

    # -- background refresh ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the background refresher (URL sets; a no-op for fixed sets or when running)."""
        if self._fetch is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"jwks-refresh {self._source}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background refresher and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def loaded(self) -> bool:
        """Whether keys were installed at least once (fixed sets: always; URL sets: after a first fetch)."""
        return self._fetch is None or self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until a URL set has loaded keys once (True), or timeout_s passed (False). Fixed sets: True."""
        return self._fetch is None or self._ready.wait(timeout_s)

    def status(self) -> dict[str, Any]:
        """Source, key ids, refresh counters and the last error, for status pages."""
        return {
            "source": self._source,
            "kids": sorted(self._keys[0]),
            "keys": self._count,
            "loaded_at": self._loaded_at,
            "refresh_ok": self._ok,
            "refresh_failed": self._failed,
            "refresh_pending": self._wake.is_set(),
            "last_error": self._last_error,
        }

    def _run(self) -> None:
        next_due = time.monotonic()
        failures = 0
        while True:
            woken = self._wake.wait(max(0.0, next_due - time.monotonic()))
            if self._stop.is_set():
                return
            earliest = self._last_attempt + self._min_interval
            if woken and time.monotonic() < earliest and self._stop.wait(earliest - time.monotonic()):
                return
            self._wake.clear()
            failures = 0 if self._refresh() else failures + 1
            next_due = time.monotonic() + (self._retry_s(failures) if failures else self._refresh_s)

    def _retry_s(self, failures: int) -> float:
        """Back off after consecutive failures: from max(min interval, 1 s), doubling, up to refresh_s."""
        return min(self._refresh_s, max(self._min_interval, _RETRY_FLOOR_S) * 2 ** min(failures - 1, 10))

    def _refresh(self) -> bool:
        self._last_attempt = time.monotonic()
        try:
            assert self._fetch is not None
            self._install(_parse_keys(_keys_of(self._fetch(), self._source), self._source))
        except Exception as exc:
            self._failed += 1
            self._last_error = _describe(exc)
            log.warning("JWKS refresh from %s failed: %s (keeping %d keys)", self._source,
                        self._last_error, self._count)
            self._notify(False)
            return False
        self._ok += 1
        self._last_error = None
        self._ready.set()
        self._notify(True)
        return True

    def _notify(self, ok: bool) -> None:
        if self._on_refresh is None:
            return
        try:
            self._on_refresh(ok)
        except Exception:
            log.exception("JWKS on_refresh callback failed")

    def _install(self, keys: list[jwt.PyJWK]) -> None:
        verifying = [VerifyingKey.from_jwk(k) for k in keys]
        by_kid = {k.jwk.key_id: k for k in verifying if k.jwk.key_id is not None}
        self._keys = (by_kid, verifying[0] if len(verifying) == 1 else None)
        self._count = len(keys)
        self._loaded_at = time.time()


def _keys_of(data: bytes, source: str) -> list[Mapping[str, Any]]:
    try:
        document = json.loads(data)
    except ValueError:
        raise JWKSError(f"{source}: JWKS is not valid JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JWKSError(f"{source}: JWKS has no 'keys' list")
    return keys


def _parse_keys(raw: list[Mapping[str, Any]], source: str) -> list[jwt.PyJWK]:
    """PyJWK for each usable signing key; keys for encryption, keys whose `key_ops` do not allow "verify",
    and keys of unknown types are skipped (the last logged)."""
    keys: list[jwt.PyJWK] = []
    for index, jwk in enumerate(raw):
        if not isinstance(jwk, Mapping) or not _verifies(jwk):
            continue
        try:
            keys.append(jwt.PyJWK(dict(jwk)))
        except Exception as exc:
            log.warning("%s: JWKS key #%d skipped: %s", source, index, type(exc).__name__)
    if not keys:
        raise JWKSError(f"{source}: JWKS has no usable signing key")
    kids = [k.key_id for k in keys if k.key_id is not None]
    if len(kids) != len(set(kids)):
        raise JWKSError(f"{source}: JWKS has duplicate key ids")
    return keys


def _verifies(jwk: Mapping[str, Any]) -> bool:
    """True when the JWK may verify signatures: `use` absent or "sig" (RFC 7517 §4.2) and `key_ops` absent
    or a list of distinct strings that includes "verify" (§4.3); a malformed `key_ops` disqualifies."""
    if jwk.get("use", "sig") != "sig":
        return False
    ops = jwk.get("key_ops")
    if ops is None:
        return True
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops) or len(set(ops)) != len(ops):
        return False
    return "verify" in ops


def _header(token: str) -> dict[str, Any]:
    """The JOSE header read leniently, to pick the key and name what is wrong when strict_header failed;
    verify_compact then refuses the token."""
    try:
        segment = token[: token.index(".")]
        header = loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except Exception:
        raise JWTRejected("token malformed") from None
    if not isinstance(header, dict):
        raise JWTRejected("token malformed")
    return header


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    exp = _time_claim(claims, "exp")
    if exp is not None and exp <= now - leeway:
        raise JWTExpired("token expired")
    nbf = _time_claim(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise JWTRejected("token not yet valid (nbf)")
    iat = _time_claim(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise JWTRejected("token issued in the future (iat)")


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JWTRejected(f"claim {name!r} is not a number")
    return float(value)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {exc.reason}"
    return str(exc) or type(exc).__name__

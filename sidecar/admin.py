"""The admin listener's bearer check: who may read (GET) and who may write (evaluate caller input).

`server.admin_auth`:
- `none` (default): no check, as OPA's default; allowed only while `server.admin_host` is a loopback
  address (`check_listener` refuses anything else at startup).
- `token`: `server.admin_token_file` holds one token per line, followed by the scopes it grants
  (`TOKEN SCOPE [SCOPE...]`, `#` starts a comment). A presented token is compared with every listed
  token in constant time (SHA-256 digests, `hmac.compare_digest`).
- `jwt`: an access token from the IdP, verified with the gate's identity key set (issuer, audience and
  algorithms of `identity.*`); its scopes are the union of `scope` (space-separated), `scp` and `roles`.

Scopes: `server.admin_read_scope` allows GET/HEAD; `server.admin_write_scope` allows everything (it
implies read). Writing is anything else: every POST (the Data API evaluates the caller's input, e.g. a
forged `input` for `data.ig.policies.admin`) and a GET that supplies `?input=`. No token or a bad one:
401; a valid token without the scope: 403. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ig_gate.middleware.jwks import JWKSet, JWTRejected
from ig_gate.middleware.settings import ConfigError, IdentitySettings, ServerSettings
from ig_gate.sidecar.asgi_io import JSON_HEADERS, ASGIApp, Receive, Scope, Send, dumps, respond

MIN_TOKEN_CHARS = 16
_READ_METHODS = (b"GET", b"HEAD")
ScopeCheck = Callable[[str], frozenset[str] | None]  # bearer token -> its scopes, None when not valid


def check_listener(server: ServerSettings) -> None:
    """ConfigError when the two listeners cannot be run as configured: a bad admin port, a non-loopback
    admin listener without any admin auth, an unusable token file."""
    if not 0 < server.admin_port < 65536:
        raise ConfigError(f"server.admin_port: must be 1-65535, got {server.admin_port}")
    if server.admin_port == server.port:
        raise ConfigError(f"server.admin_port: must differ from server.port ({server.port})")
    if server.admin_auth == "none" and not is_loopback(server.admin_host):
        raise ConfigError(
            f"server.admin_host: {server.admin_host} is not a loopback address and server.admin_auth is "
            "none; set server.admin_auth (token with server.admin_token_file, or jwt) or bind 127.0.0.1"
        )
    if server.admin_auth == "token":
        load_token_file(server.admin_token_file or "", (server.admin_read_scope, server.admin_write_scope))


def is_loopback(host: str) -> bool:
    """True for a loopback IP address or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token_file(path: str, known_scopes: Iterable[str]) -> dict[bytes, frozenset[str]]:
    """SHA-256 digest of each token -> its scopes; ConfigError naming the file and line (never the token)."""
    where = f"server.admin_token_file: {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    known = frozenset(known_scopes)
    tokens: dict[bytes, frozenset[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        token, *scopes = fields
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{where}:{number}: a token must be at least {MIN_TOKEN_CHARS} characters")
        unknown = [scope for scope in scopes if scope not in known]
        if not scopes or unknown:
            raise ConfigError(
                f"{where}:{number}: each token needs its scopes ({' or '.join(sorted(known))}) after it"
            )
        tokens[_digest(token)] = frozenset(scopes)
    if not tokens:
        raise ConfigError(f"{where}: no tokens")
    return tokens


def token_file_check(tokens: dict[bytes, frozenset[str]]) -> ScopeCheck:
    """A ScopeCheck over a token file's digests: every entry is compared, in constant time."""
    entries = list(tokens.items())

    def check(token: str) -> frozenset[str] | None:
        presented = _digest(token)
        found = None
        for digest, scopes in entries:
            if hmac.compare_digest(presented, digest):
                found = scopes
        return found

    return check


def jwt_check(
    key_set: JWKSet, identity: IdentitySettings, clock: Callable[[], float] = time.time
) -> ScopeCheck:
    """A ScopeCheck for the IdP's access tokens (the gate's identity key set)."""
    algorithms = tuple(a for a in identity.algorithms if a.lower() != "none")

    def check(token: str) -> frozenset[str] | None:
        try:
            claims = key_set.decode(
                token, algorithms=algorithms, now=clock(), leeway=float(identity.leeway_s),
                issuer=identity.issuer, audience=identity.audience, require=("exp", "iss", "sub"),
            )
        except JWTRejected:
            return None
        return token_scopes(claims)

    return check


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The scopes a JWT grants: `scope` (RFC 8693 / RFC 9068, space-separated), `scp`, `roles`."""
    found: set[str] = set()
    for name in ("scope", "scp", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


class AdminAuth:
    """Pure-ASGI bearer check in front of the admin app (see the module docstring)."""

    def __init__(self, app: ASGIApp, check: ScopeCheck, read_scope: str, write_scope: str) -> None:
        self.app = app
        self.check = check
        self.read_scope = read_scope
        self.write_scope = write_scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # the admin listener has no sockets
                await send({"type": "websocket.close", "code": 4401})
                return
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        granted = self.check(token) if token is not None else None
        if granted is None:
            await _refuse(send, 401, "unauthorized", "a valid admin bearer token is required", None)
            return
        needed = self.write_scope if _writes(scope) else self.read_scope
        if needed not in granted and self.write_scope not in granted:
            await _refuse(send, 403, "forbidden", f"the token lacks the scope {needed!r}", needed)
            return
        await self.app(scope, receive, send)


def admin_auth(app: ASGIApp, server: ServerSettings, key_set: JWKSet | None,
               identity: IdentitySettings) -> ASGIApp:
    """`app` behind the bearer check `server.admin_auth` asks for (unchanged for `none`)."""
    if server.admin_auth == "none":
        return app
    scopes = (server.admin_read_scope, server.admin_write_scope)
    if server.admin_auth == "token":
        check = token_file_check(load_token_file(server.admin_token_file or "", scopes))
    elif key_set is None:
        raise ConfigError("server.admin_auth: jwt needs identity.jwks (the IdP's key set)")
    else:
        check = jwt_check(key_set, identity)
    return AdminAuth(app, check, *scopes)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if kind.lower() == "bearer" and token else None
    return None


def _writes(scope: Scope) -> bool:
    """Whether a request needs the write scope: any method but GET/HEAD, or caller-supplied input."""
    if scope["method"].encode() not in _READ_METHODS:
        return True
    query = scope.get("query_string", b"").decode("latin-1")
    return any(name == "input" for name, _ in parse_qsl(query, keep_blank_values=True))


async def _refuse(send: Send, status: int, code: str, message: str, scope_needed: str | None) -> None:
    challenge = 'Bearer realm="ig-gate-admin"'
    if scope_needed is not None:
        challenge += f', error="insufficient_scope", scope="{scope_needed}"'
    headers = [*JSON_HEADERS, (b"www-authenticate", challenge.encode())]
    await respond(send, status, headers, dumps({"code": code, "message": message}))

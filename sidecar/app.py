"""The sidecar service: two listeners (client and admin) around one Gate, in one process.

`create_app` returns one app for both: uvicorn serves it on two sockets (sidecar/listeners.py), and a
connection accepted on `server.admin_port` goes to the admin app, every other to the client app.

- Client app (the port clients, the gateway and the IdP reach): the routes of the configured mode.
  Reverse-proxy mode (an extension provides the fallback, i.e. `server.upstream` is set): the proxy for
  every path. Otherwise forward-auth (`/authz`, `/authz/<original path>`) and the Apollo Router
  coprocessor (`POST /apollo/coprocessor`). In both: `/healthz`, `/readyz` (which say nothing about
  the configuration), `POST /ssf/events` when `ssf.*` is set (each event is a SET signed by the IdP, so
  it stays on the port the IdP can reach) and the extensions' routes.
- Admin app: the OPA-compatible Data API (`/v1/data/...`, `/health`), `/v1/status`, `/metrics`,
  `/healthz`, `/readyz` with the reason; behind `server.admin_auth` (sidecar/admin.py).

The gate, its policy source, risk store and SSF receiver come from the composition root
(middleware/compose.py `compose`), exactly as for ZeroTrustMiddleware; the lifespan starts and stops their
background work (`GateSystem.start` / `close`).

Extension point (sidecar/extension.py): other sidecar modules contribute an `Extension` (routes, a fallback
app for every path no route matches, a lifespan context), built by an `ExtensionFactory(settings, gate)`.
`build_app` calls
the factories listed in `EXTENSIONS` (the reverse proxy registers there);
`create_app(..., extensions=[...])` takes them explicitly (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ig_gate.middleware.compose import GateSystem, compose
from ig_gate.middleware.settings import Settings, load_settings
from ig_gate.sidecar import autoscale_api, coprocessor, forward_auth, opa_api, ops
from ig_gate.sidecar.access_log import with_access_log
from ig_gate.sidecar.admin import admin_auth
from ig_gate.sidecar.asgi_io import ASGIApp
from ig_gate.sidecar.extension import Extension, ExtensionFactory
from ig_gate.sidecar.proxy import proxy_extension
from ig_gate.sidecar.wiring import Sidecar, client_ip_resolver

CONFIG_ENV = "IG_SIDECAR_CONFIG"  # the config path for `app_from_env` (multi-worker `ig-gate serve`)


EXTENSIONS: tuple[ExtensionFactory, ...] = (proxy_extension,)


def gate_system(settings: Settings) -> GateSystem:
    """The composition root's gate for the sidecar (its client-IP resolver also reads coprocessor hops)."""
    return compose(settings, ip_resolver=client_ip_resolver(settings))


def create_app(
    settings: Settings, system: GateSystem | None = None, *, extensions: Sequence[Extension] = ()
) -> SidecarApp:
    """The sidecar's two listener apps for `settings`; builds the gate system unless one is given."""
    if system is None:
        system = gate_system(settings)
    gate = system.gate
    sidecar = Sidecar(settings, system)
    fallbacks = [e.fallback for e in extensions if e.fallback is not None]
    if len(fallbacks) > 1:
        raise ValueError("at most one sidecar extension may provide a fallback app")
    routes: list[BaseRoute] = []  # the hot endpoints first: Starlette matches routes in order
    if not fallbacks:  # reverse-proxy mode serves neither forward-auth nor coprocessor payloads
        routes += [*forward_auth.routes(sidecar), *coprocessor.routes(sidecar)]
    routes += ops.client_routes(sidecar)
    if system.ssf is not None:
        from ig_gate.middleware.ssf import PATH

        routes.append(Route(PATH, system.ssf, methods=["POST"]))
    for extension in extensions:
        routes.extend(extension.routes)
    admin = Starlette(
        routes=[*ops.admin_routes(sidecar), *opa_api.routes(sidecar), *autoscale_api.routes(sidecar)],
        exception_handlers={HTTPException: _json_http_error},  # an unrouted path: JSON, as every answer
    )
    guarded = admin_auth(admin, settings.server, gate.key_sets.get("identity"), settings.identity)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # bundle polling, key-set refresh, risk events, decision-log writer (started off the event loop)
        await asyncio.to_thread(system.start)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for extension in extensions:
                    if extension.lifespan is not None:
                        await stack.enter_async_context(extension.lifespan())
                yield
        finally:
            await asyncio.to_thread(system.close)

    app = SidecarApp(routes=routes, lifespan=lifespan)
    if fallbacks:
        app.router.default = fallbacks[0]
        app.set_fallback(fallbacks[0], routes)
    app.state.sidecar = sidecar
    app.set_admin(guarded, settings.server.admin_port)
    return app


async def _json_http_error(request: Request, exc: Exception) -> Response:
    """The admin listener's 404/405 in OPA's error shape (Starlette's default is plain text)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "resource_not_found", 405: "method_not_allowed"}.get(status, "internal_error")
    return JSONResponse({"code": code, "message": HTTPStatus(status).phrase}, status_code=status)


class SidecarApp(Starlette):
    """The ASGI app of both listeners. A connection accepted on the admin port (the local port in
    `scope["server"]`, which the server takes from the socket, never from a header) goes to the admin
    app; every other one, and the lifespan, to this Starlette app of the client routes.

    A client path no sidecar route can match goes straight to the fallback (the reverse proxy): routing
    and Starlette's exception middlewares cost ~50 µs per proxied request. A path that starts like a
    sidecar route still goes through the router (and, unmatched, to the fallback from there)."""

    _fallback: ASGIApp | None = None
    _own_prefixes: tuple[str, ...] = ()
    _admin: ASGIApp | None = None
    _admin_port: int = -1

    def set_fallback(self, fallback: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self._fallback = fallback
        self._own_prefixes = tuple(
            getattr(route, "path", "/").split("{", 1)[0] or "/" for route in routes
        )

    def set_admin(self, admin: ASGIApp, port: int) -> None:
        self._admin = admin
        self._admin_port = port

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            server = scope.get("server")
            if server is not None and server[1] == self._admin_port and self._admin is not None:
                await self._admin(scope, receive, send)
                return
            if self._fallback is not None and not scope["path"].startswith(self._own_prefixes):
                scope["app"] = self
                await self._fallback(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_app(settings: Settings, factories: Sequence[ExtensionFactory] = EXTENSIONS) -> SidecarApp:
    """The full sidecar for `settings`: the gate system and every configured extension."""
    system = gate_system(settings)
    try:
        extensions = [e for factory in factories if (e := factory(settings, system.gate)) is not None]
    except BaseException:
        system.close()
        raise
    return create_app(settings, system, extensions=extensions)


def app_from_env() -> ASGIApp:
    """The uvicorn factory `ig_gate.sidecar.app:app_from_env` (one app per worker process, with the access
    log when `log.access`); the config path comes from $IG_SIDECAR_CONFIG."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    return with_access_log(build_app(settings), settings)

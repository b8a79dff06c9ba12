"""The sidecar's access log (`log.access: true`): one INFO line per HTTP request on `ig_gate.access`.

Each line gives the listener (client | admin), the method, the normalised path (never the query string:
it may carry a token or an `?input=` document), the status, the duration in milliseconds and the id of
the decision the gate recorded for the request (`-` when none was made: probes, metrics, the Data API's
own ids are in its answers). Headers are never read, so neither a bearer token nor a cookie can reach the
log. A path the gate refuses as ambiguous is logged as `-` (it was never served under any name).

Pure ASGI around the whole app (both listeners); off by default, and then not in the stack at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ig_gate.middleware.logs import DECISION_NOTE, FIELDS
from ig_gate.middleware.paths import AmbiguousPath, normalise_raw
from ig_gate.middleware.settings import Settings
from ig_gate.sidecar.asgi_io import ASGIApp, Receive, Scope, Send

log = logging.getLogger("ig_gate.access")


class AccessLog:
    """Logs each HTTP request that `app` answers; everything else passes through untouched."""

    def __init__(self, app: ASGIApp, admin_port: int) -> None:
        self.app = app
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]
        decisions: list[str] = []

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        method, path = scope["method"], _path(scope)  # before the app: it may rewrite the scope
        token = DECISION_NOTE.set(decisions)
        try:
            await self.app(scope, receive, send_status)
        finally:
            DECISION_NOTE.reset(token)
            self._line(scope, method, path, status[0], time.perf_counter() - started, decisions)

    def _line(
        self, scope: Scope, method: str, path: str, status: int, seconds: float, decisions: list[str]
    ) -> None:
        server = scope.get("server")
        listener = "admin" if server is not None and server[1] == self.admin_port else "client"
        fields = {
            "event": "access", "listener": listener, "method": method, "path": path, "status": status,
            "duration_ms": round(seconds * 1000, 3), "decision_id": decisions[-1] if decisions else None,
        }
        log.info(
            "%s %s %s %d %.1fms decision %s", listener, method, path, status, fields["duration_ms"],
            fields["decision_id"] or "-", extra={FIELDS: fields},
        )


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    try:
        return normalise_raw(raw.split(b"?", 1)[0]).decode("ascii")
    except (AmbiguousPath, UnicodeDecodeError):
        return "-"


def with_access_log(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` with the access log when `log.access` is on, else `app` itself."""
    return AccessLog(app, settings.server.admin_port) if settings.log.access else app

"""Run `ig-gate serve`'s two listeners in one uvicorn server.

Both sockets (the client's `server.host:port` and the admin `server.admin_host:admin_port`) are bound
here, before anything serves, and handed to uvicorn: one process (or each of `--workers N`) serves both
with one app and one gate; `sidecar.app.SidecarApp` sends each connection to the client or the admin app
by the local port it was accepted on. With N workers every worker accepts on both sockets, so any of
them answers /metrics, aggregated from all of them (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ig_gate.middleware.settings import ServerSettings

BIND_FAILURE = 3  # uvicorn's STARTUP_FAILURE: an address cannot be bound, or the app does not start


def serve_listeners(app: Any, options: dict[str, Any], server: ServerSettings) -> int:
    """Serve `app` (an ASGI app, or an import string with `factory`/`workers` in options) on the client
    and admin sockets until a termination signal; the exit status."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(app, **options)
    admin = uvicorn.Config(app, host=server.admin_host, port=server.admin_port, log_config=None)
    # admin first: when the client port accepts connections (what readiness probes see), so does admin
    sockets = [admin.bind_socket(), config.bind_socket()]  # each exits with status 3 when it cannot bind
    logging.getLogger("uvicorn.error").info(
        "client listener %s:%d, admin listener %s:%d (Data API, /metrics, /v1/status)",
        server.host, server.port, server.admin_host, server.admin_port,
    )
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()
            return 0
        single = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            single.run(sockets=sockets)
        return 0 if single.started else BIND_FAILURE
    finally:
        for sock in sockets:
            sock.close()

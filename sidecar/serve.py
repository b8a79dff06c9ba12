"""`ig-gate serve`: run the sidecar under uvicorn (uvloop, httptools, access log off).

Configuration problems are found before listening and reported in one line naming the key path (exit 2).
SIGTERM/SIGINT drain in-flight requests for up to `server.graceful_timeout_s`, then the lifespan closes
the gate (decision log flushed, refreshers and bundle polling stopped).

With `--workers N > 1` every worker builds its own app from the same config (uvicorn factory
`ig_gate.sidecar.app:app_from_env`), and prometheus-client runs in multiprocess mode: a fresh
PROMETHEUS_MULTIPROC_DIR (unless one is set) that /metrics of any worker aggregates. Every worker
serves both the client and the admin listener (sidecar/listeners.py). Each worker writes its own
decision-log file and chain (middleware/decision_log.py). Risk events are per process without Redis, so
SSF (`ssf.transmitter_jwks`) with several workers requires `risk_store.redis_url` (exit 2 otherwise).

Logging (`log.*`) is applied before anything is built, to ig-gate's and uvicorn's loggers alike
(middleware/logs.py); `log.access` adds one line per request (sidecar/access_log.py). A bundle file
(`bundle.path`) that cannot be used at start is a configuration error (exit 2, naming the setting) unless
`bundle.wait_for_bundle`; the file is watched, and SIGHUP reloads it (or polls the registry) at once
(with several workers uvicorn's supervisor restarts them on SIGHUP, which reloads too).
"""

from __future__ import annotations

import argparse
import logging.config
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ig_gate.errors import IgGateError, describe
from ig_gate.middleware.compose import GateSystem
from ig_gate.middleware.logs import held_records, logging_config
from ig_gate.middleware.settings import ConfigError, Settings, check_files, load_settings
from ig_gate.sidecar.access_log import with_access_log
from ig_gate.sidecar.admin import check_listener
from ig_gate.sidecar.listeners import serve_listeners

if TYPE_CHECKING:
    from ig_gate.sidecar.app import SidecarApp

USAGE = 2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UPSTREAM_ENV = "IG_GATE_SERVER__UPSTREAM"
STARTUP_ERRORS = (IgGateError, OSError, ValueError)
DESCRIPTION = """Serve the sidecar on two listeners in one process.

Client listener (server.host:server.port, default 127.0.0.1:8181): with --upstream a reverse proxy for
every path; otherwise POST /apollo/coprocessor (Apollo Router) and /authz (nginx, Traefik, Envoy
forward-auth). Always /healthz and /readyz (which reveal nothing), and /ssf/events (IdP risk events,
signed SETs, when ssf.* is set).

Admin listener (server.admin_host:server.admin_port, default 127.0.0.1:8182): the OPA-compatible
/v1/data and /health, /v1/status, /metrics. By default it answers without authentication, as OPA does,
and only on loopback; on any other address set server.admin_auth (token: server.admin_token_file, or
jwt: the IdP's tokens with server.admin_read_scope / server.admin_write_scope), or serve refuses to
start."""
EPILOG = """exit status: 0 after a clean shutdown (SIGTERM/SIGINT drain in-flight requests for
server.graceful_timeout_s), 2 on a configuration error (one line naming the key; also a bundle.path that
cannot be used, unless bundle.wait_for_bundle), 3 when the address cannot be bound. SIGHUP reloads the
policy bundle."""


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate serve --config FILE [--host] [--port] [--workers] [--upstream URL]`."""
    serve = subparsers.add_parser(
        "serve",
        help="run the sidecar (coprocessor, forward-auth, Data API...)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", metavar="FILE", help="ig-gate.yaml (IG_GATE_* env vars override it)")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    serve.add_argument("--upstream", metavar="URL", help="reverse-proxy every other path to URL")
    serve.add_argument("--admin-host", help="admin listen address (default: server.admin_host)")
    serve.add_argument("--admin-port", type=int, help="admin listen port (default: server.admin_port)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until a termination signal."""
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(exc)
    server = settings.server
    if server.workers > 1 and settings.ssf.transmitter_jwks and not settings.risk_store.redis_url:
        # risk events are kept per process without Redis: the other workers would never see them
        return _fail(ConfigError(
            f"server.workers: {server.workers} workers with ssf.transmitter_jwks set need "
            "risk_store.redis_url (a risk event reaches only the worker that receives it)"
        ))
    log_config = logging_config(settings.log)
    logging.config.dictConfig(log_config)  # before building: the bundle activation line is logged then
    try:
        check_listener(server)
        with held_records() as release:  # a startup that fails says one line
            app = _build(settings)  # fails here, before listening, on bad keys, key sets, geo DB...
            system = app.state.sidecar.system
            problem = unusable_bundle(system)
            if problem is not None:
                system.close()
                raise ConfigError(problem)
            release()
    except STARTUP_ERRORS as exc:
        return _fail(exc)
    options = {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,  # uvicorn's would log query strings: log.access is ours
        "log_config": log_config,
        "timeout_graceful_shutdown": max(1, round(server.graceful_timeout_s)),
        "lifespan": "on",
        # ig-gate alone decides which forwarded headers to trust (geo.trusted_proxies); uvicorn's own
        # rewriting would replace the peer address before the gate sees it
        "proxy_headers": False,
        "server_header": False,
    }
    if server.workers == 1:
        signal.signal(signal.SIGHUP, lambda *_: _reload_in_background(system))
        return serve_listeners(with_access_log(app, settings), options, server)
    app.state.sidecar.system.close()  # the workers build their own
    os.environ["IG_SIDECAR_CONFIG"] = str(Path(args.config).resolve()) if args.config else ""
    if server.upstream:
        os.environ[UPSTREAM_ENV] = server.upstream
    for name in ("admin_host", "admin_port"):  # the workers dispatch by the admin port
        os.environ[f"IG_GATE_SERVER__{name.upper()}"] = str(getattr(server, name))
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="ig-gate-metrics-")
    try:
        factory = {**options, "factory": True, "workers": server.workers}
        return serve_listeners("ig_gate.sidecar.app:app_from_env", factory, server)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _settings(args: argparse.Namespace) -> Settings:
    """The file, IG_GATE_* variables, then the command line, all validated by the schema; every file-valued
    setting must name an existing file."""
    changes = {
        name: value
        for name in ("host", "port", "workers", "upstream", "admin_host", "admin_port")
        if (value := getattr(args, name)) is not None
    }
    settings = load_settings(args.config, overrides={"server": changes})
    check_files(settings)
    return settings


def _build(settings: Settings) -> SidecarApp:
    from ig_gate.sidecar.app import build_app  # imported here: the CLI's other commands stay light

    return build_app(settings)


def unusable_bundle(system: GateSystem) -> str | None:
    """Why the bundle file cannot be used at start (a configuration error for serve), else None; None too
    for a registry or remote source, or with bundle.wait_for_bundle (/readyz says 503 until it can)."""
    if system.policy.kind != "file" or system.settings.bundle.wait_for_bundle:
        return None
    if system.gate.policy.current() is not None:
        return None
    reason = getattr(system.gate.policy, "reason", None) or "; ".join(system.policy.problems)
    return reason or "bundle.path: no usable policy bundle"


def _reload_in_background(system: GateSystem) -> None:
    """SIGHUP: reload the bundle on a thread (the signal handler runs on the event loop's thread)."""
    threading.Thread(target=system.reload, name="sighup-reload", daemon=True).start()


def _fail(exc: BaseException) -> int:
    print(f"ig-gate: {describe(exc)}", file=sys.stderr)  # the message names the key; no Python class name
    return USAGE

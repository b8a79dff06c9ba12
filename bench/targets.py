"""ASGI factories for the load benchmarks, served by the uvicorn CLI (`uvicorn --factory bench.targets:X`).

Each factory reads the demo config path from $IG_BENCH_CONFIG (written by `ig_gate.sidecar.demo.prepare`):

- `bare`: the demo GraphQL app alone;
- `middleware`: the demo app behind ZeroTrustMiddleware (metrics and decision log as configured);
- `middleware_nolog`: the same with the decision log off (what the log costs, served);
- `passthrough`: the demo app behind a pure-ASGI middleware that only reads the body and replays it (what any
  body-inspecting middleware costs in ASGI plumbing, before deciding anything);
- `stdlib_control`: the demo app behind unrelated pure-Python stdlib calls costing in process about what the
  gate does (~30 µs): what any Python code of that size costs served (a control for the gate's figure);
- `pyjwt`: the demo app behind what users write by hand instead (bench/handwritten.py: pyjwt on every
  request);
- `sidecar`: the sidecar service (forward-auth `/authz`, Apollo coprocessor, ...) on the same config;
- `devidp`: the development IdP (`POST /token`) with the keys in $IG_BENCH_IDP_DIR (for step-up flows).
"""

from __future__ import annotations

import dataclasses
import email.utils
import fractions
import importlib.util
import ipaddress
import os
import shlex
import string
import urllib.parse
from pathlib import Path
from typing import Any

from ig_gate.middleware import ZeroTrustMiddleware
from ig_gate.sidecar.demo_app import create_app
from ig_gate.sidecar.devidp import DevIdP, DevKey

CONFIG_ENV = "IG_BENCH_CONFIG"
IDP_DIR_ENV = "IG_BENCH_IDP_DIR"
IDP_KID = "demo-idp-1"  # the key ids `prepare()` gives the demo keys
MDM_KID = "demo-mdm-1"
SIDECAR_MODULES = ("ig_gate.sidecar.app", "ig_gate.sidecar.forward_auth", "ig_gate.sidecar.coprocessor")


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"${name} is not set (bench/targets.py factories need it)")
    return Path(value)


def bare() -> Any:
    """The demo app, unprotected."""
    return create_app()


def middleware() -> Any:
    """The demo app behind ZeroTrustMiddleware."""
    return ZeroTrustMiddleware(create_app(), config=_env_path(CONFIG_ENV))


def middleware_nolog() -> Any:
    """The demo app behind ZeroTrustMiddleware with the decision log off."""
    from ig_gate.middleware.settings import load_settings

    settings = load_settings(_env_path(CONFIG_ENV))
    quiet = dataclasses.replace(settings, decision_log=dataclasses.replace(settings.decision_log, path=None))
    return ZeroTrustMiddleware(create_app(), config=quiet)


def passthrough() -> Any:
    """The demo app behind a middleware that reads the whole body and hands the app a replaying receive, with
    the middleware's own body reader and replay (what its ASGI plumbing costs before deciding anything)."""
    from ig_gate.middleware.asgi import _replay
    from ig_gate.middleware.asgi_body import read_body

    app = create_app()

    async def read_and_replay(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        body = await read_body(receive, 1 << 20)
        await app(scope, _replay(body or b"", receive), send)

    return read_and_replay


def stdlib_work() -> None:
    """Unrelated pure-Python stdlib calls, ~30 µs in process (bench/wire_replay.py): the gate's own size."""
    _ = ipaddress.ip_address("8.8.8.8").is_private
    urllib.parse.urlsplit("https://a.example/x/y?z=1#f")
    urllib.parse.parse_qsl("a=1&b=2&c=3")
    email.utils.parsedate_to_datetime("Thu, 03 Dec 2026 16:40:42 GMT")
    _ = fractions.Fraction(3, 7) + fractions.Fraction(1, 3)
    shlex.split("a 'b c' d")
    string.Template("$a and $b").substitute(a=1, b=2)


def after_stdlib_work(app: Any) -> Any:
    """`app`, with stdlib_work() done first on every HTTP request."""

    async def control(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            stdlib_work()
        await app(scope, receive, send)

    return control


def stdlib_control() -> Any:
    """The demo app behind stdlib_work() on every request (nothing decided)."""
    return after_stdlib_work(create_app())


def pyjwt() -> Any:
    """The demo app behind a hand-written pure-ASGI middleware verifying the JWT with pyjwt on every request,
    with the identity settings (key set, issuer, audience) of the demo config."""
    from bench.handwritten import PyJWTMiddleware
    from ig_gate.middleware.settings import load_settings

    identity = load_settings(_env_path(CONFIG_ENV)).identity
    if identity.jwks is None:
        raise RuntimeError("identity.jwks is not set in the demo config")
    return PyJWTMiddleware(create_app(), Path(identity.jwks), identity.issuer, identity.audience)


def sidecar() -> Any:
    """The sidecar app (forward-auth and coprocessor endpoints) with every configured extension."""
    from ig_gate.middleware.settings import load_settings
    from ig_gate.sidecar.app import build_app

    return build_app(load_settings(_env_path(CONFIG_ENV)))


def devidp() -> Any:
    """The development IdP serving `POST /token` with the keys written by `write_idp_keys`."""
    keys = _env_path(IDP_DIR_ENV)
    return DevIdP(DevKey.load(keys / "idp.key", IDP_KID), DevKey.load(keys / "mdm.key", MDM_KID)).app()


def write_idp_keys(idp: DevIdP, directory: Path) -> None:
    """Write both private keys of `idp` where `devidp()` (and the locustfile's flags) read them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, key in (("idp.key", idp.session_key), ("mdm.key", idp.device_key)):
        (directory / name).write_bytes(key.private_pem)
        (directory / name).chmod(0o600)


def sidecar_available() -> bool:
    """True when the sidecar modules the forward-auth and coprocessor configs need are installed."""
    return all(importlib.util.find_spec(name) is not None for name in SIDECAR_MODULES)

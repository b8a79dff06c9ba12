"""The sidecar's extension point: what a sidecar module (the reverse proxy, say) plugs into the app.

A module contributes an `Extension` built by an `ExtensionFactory(settings, gate)`; sidecar/app.py lists the
factories and assembles the app. It lives apart from app.py so that a contributing module does not import
the app that imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from starlette.routing import BaseRoute

from ig_gate.middleware.gate import Gate
from ig_gate.middleware.settings import Settings
from ig_gate.sidecar.asgi_io import ASGIApp


@dataclass(frozen=True, slots=True)
class Extension:
    """What a sidecar module plugs into the app."""

    routes: Sequence[BaseRoute] = ()
    fallback: ASGIApp | None = None  # serves every request no route matches (e.g. the reverse proxy)
    lifespan: Callable[[], AbstractAsyncContextManager[None]] | None = None  # entered at startup


ExtensionFactory = Callable[[Settings, Gate], Extension | None]  # None: not configured, nothing to add

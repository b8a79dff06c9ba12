"""The enforcement core (Gate) and the pure-ASGI ZeroTrustMiddleware around it.

`from ig_gate.middleware import ZeroTrustMiddleware, Gate, Settings, load_settings`; the middleware and
the gate (which pull in the Rego engine, JWT and geo libraries) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ig_gate.middleware.settings import Settings, load_settings

if TYPE_CHECKING:
    from ig_gate.middleware.asgi import ZeroTrustMiddleware
    from ig_gate.middleware.gate import Gate

__all__ = ["Gate", "Settings", "ZeroTrustMiddleware", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "ZeroTrustMiddleware":
        from ig_gate.middleware.asgi import ZeroTrustMiddleware

        return ZeroTrustMiddleware
    if name == "Gate":
        from ig_gate.middleware.gate import Gate

        return Gate
    raise AttributeError(f"module 'ig_gate.middleware' has no attribute {name!r}")

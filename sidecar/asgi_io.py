"""Tiny pure-ASGI helpers for the sidecar's hot endpoints: the middleware's (middleware/asgi_body.py),
re-exported, and the ASGI app type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ig_gate.middleware.asgi_body import JSON_HEADERS as JSON_HEADERS
from ig_gate.middleware.asgi_body import BodyTooLarge as BodyTooLarge
from ig_gate.middleware.asgi_body import Headers as Headers
from ig_gate.middleware.asgi_body import Message as Message
from ig_gate.middleware.asgi_body import Receive as Receive
from ig_gate.middleware.asgi_body import Scope as Scope
from ig_gate.middleware.asgi_body import Send as Send
from ig_gate.middleware.asgi_body import dumps as dumps
from ig_gate.middleware.asgi_body import read_body as read_body
from ig_gate.middleware.asgi_body import respond as respond
from ig_gate.middleware.asgi_body import respond_json as respond_json

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

"""`IgGateError`, the root of every error ig-gate raises on purpose, and `describe()` for one-line messages.

It lies below every other package (bundles, geo, middleware and sidecar all import it), so it imports
nothing of ig-gate. A subclass names a kind of problem; callers tell problems apart by class, never by
parsing a message. Two class attributes travel with each subclass:

- `code`: a stable machine name for metrics labels and log fields (subclasses inherit their parent's
  unless the distinction matters to an operator);
- `label`: a few words for a person, shown when a message alone would say too little.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["IgGateError", "describe"]


class IgGateError(Exception):
    """Something a user can cause or an operator must see (bad bundle, key, config, token, request...);
    the message says what and where."""

    code: ClassVar[str] = "error"
    label: ClassVar[str] = "error"


def describe(exc: BaseException) -> str:
    """`exc` for a person on one line: its message (whitespace folded), else its label; an OSError names
    its file. Never a Python class name."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    message = " ".join(str(exc).split())
    if message:
        return message
    return exc.label if isinstance(exc, IgGateError) else "no message"

"""Logging for ig-gate: the `log` settings as a `logging.config.dictConfig`, and a JSON-lines formatter.

`ig-gate serve` applies `logging_config(settings.log)` before it builds anything and hands the same
dictionary to uvicorn, so uvicorn's own lines share the format. An application using ZeroTrustMiddleware
owns its logging: call `configure(settings)` at startup, or attach your own handler to the `ig_gate`
logger (every ig-gate logger is below it; a bundle activation is one INFO line on `ig_gate`).

JSON format: one object per line with `time` (UTC, ISO 8601, ms), `level`, `logger`, `message`, the
record's structured fields (what a call passes as `extra={"ig_gate": {...}}`, e.g. a bundle activation's
version, digest, key_id, source; an access line's method, path, status...), and `exception` when a
traceback is attached. Nothing here sees tokens: callers never put one into a message or a field.

`DECISION_NOTE`: while the sidecar's access log is on, each request runs with a list in this context
variable and the gate appends the id of each decision it records (the access line quotes it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.config
import logging.handlers
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from ig_gate.middleware.settings import LogSettings, Settings

FIELDS = "ig_gate"  # the `extra` key whose dict a JSON line carries as fields
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DECISION_NOTE: ContextVar[list[str] | None] = ContextVar("ig_gate_decision_note", default=None)


class JSONFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, then its `ig_gate` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            document.update((key, value) for key, value in fields.items() if key not in document)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def logging_config(log: LogSettings) -> dict[str, Any]:
    """The dictConfig for `log`: the `ig_gate` and `uvicorn` loggers on one stderr handler in the chosen
    format and level (other loggers are left as they are)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JSONFormatter"} if log.format == "json" else {"format": TEXT_FORMAT}
    )
    level = log.level.upper()
    logger = {"handlers": ["ig_gate"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ig_gate": formatter},
        "handlers": {
            "ig_gate": {"class": "logging.StreamHandler", "formatter": "ig_gate", "stream": "ext://sys.stderr"}
        },
        "loggers": {"ig_gate": logger, "uvicorn": dict(logger), "uvicorn.error": {"level": level}},
    }


def configure(settings: Settings | LogSettings) -> None:
    """Apply the `log` settings to the `ig_gate` (and uvicorn's) loggers of this process."""
    log = settings.log if isinstance(settings, Settings) else settings
    logging.config.dictConfig(logging_config(log))


@contextlib.contextmanager
def held_records(name: str = "ig_gate") -> Iterator[Callable[[], None]]:
    """Hold back what logger `name` (and below) logs inside the block; the block calls the function it gets
    to let the held records through (at the end of the block), else they are dropped. `ig-gate serve` builds
    under it: a startup that fails prints one line, the error, not the noise that led to it."""
    logger = logging.getLogger(name)
    handlers, held = logger.handlers[:], logging.handlers.BufferingHandler(capacity=1_000_000)
    released = []
    logger.handlers = [held]
    try:
        yield lambda: released.append(True)
    finally:
        logger.handlers = handlers
        for record in held.buffer if released else ():
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)

"""memprof's log events: the standard library logger ``memprof``, never configured by memprof.

Each event is one record whose message is the event name (``memprof.request.completed``,
``memprof.circuit_breaker.open``, ...) and whose fields are the record's ``extra`` attributes, so
structlog's stdlib integration (``ProcessorFormatter`` with ``ExtraAdder``), JSON formatters and log
shippers see them as fields. An app that configured no logging sees only warnings and errors (Python's
last-resort handler) and pays one level check per event for the rest.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("memprof")

# LogRecord attributes an ``extra`` key may not overwrite: such fields are prefixed instead.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def enabled(level: int) -> bool:
    """Whether an event at ``level`` would be handled (cheap: the logging module caches it)."""
    return logger.isEnabledFor(level)


def event(level: int, name: str, *, text: str | None = None, **fields: Any) -> None:
    """Log the event ``name`` with ``fields`` as extra attributes, when ``level`` is enabled. Never raises.

    ``text``: the same facts in words for people reading plain logs; the message is then
    ``"<name>: <text>"``."""
    if not logger.isEnabledFor(level):
        return
    try:
        extra = {(f"memprof_{k}" if k in _RESERVED else k): v for k, v in fields.items()}
        logger.log(level, name if text is None else f"{name}: {text}", extra=extra)
    except Exception:  # logging must never hurt the app
        pass


def info(name: str, *, text: str | None = None, **fields: Any) -> None:
    """An INFO event."""
    event(logging.INFO, name, text=text, **fields)


def warning(name: str, **fields: Any) -> None:
    """A WARNING event."""
    event(logging.WARNING, name, **fields)

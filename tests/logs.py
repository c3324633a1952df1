"""Capture memprof's log events as dicts (``{"event": name, "level": ..., **fields}``), like structlog's
``capture_logs``, from the standard library logger ``memprof``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        self.events.append({"event": record.getMessage(), "level": record.levelname.lower(), **fields})


@contextmanager
def capture_logs(level: int = logging.DEBUG) -> Iterator[list[dict[str, Any]]]:
    """Every event logged on ``memprof`` at ``level`` or above while the block runs (from any thread)."""
    logger = logging.getLogger("memprof")
    handler = _Collect()
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)

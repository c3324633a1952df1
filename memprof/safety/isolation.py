"""Isolation: memprof's own failures are counted and logged, never passed to the app.

Every hook point catches ``Exception`` (never ``BaseException``: cancellation and KeyboardInterrupt
pass) and hands it to :func:`internal_error`, which counts it by place, logs it at most once a minute per
place (the message redacted: an exception's text may quote SQL parameters or headers) and tells the
listeners (the circuit breaker in :mod:`memprof.safety.guards`). With ``MEMPROF_RAISE_INTERNAL_ERRORS=1`` (memprof's own
test suite) the error is re-raised instead, so a bug hidden in production still fails the tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from memprof import logs as log
from memprof.safety.redaction import redact_text

_LOG_INTERVAL_S = 60.0


class InternalErrors:
    """Counts of memprof's own failures, by where they happened."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last: tuple[str, str] | None = None
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, BaseException], None]] = []
        self.raise_errors = os.environ.get("MEMPROF_RAISE_INTERNAL_ERRORS", "").lower() in (
            "1",
            "true",
            "yes",
        )

    def record(self, where: str, exc: BaseException) -> None:
        """Count one failure, log it (at most once a minute per place) and tell the listeners."""
        with self._lock:
            self.counts[where] += 1
            self.last = (where, f"{type(exc).__name__}: {_safe_detail(exc)}")
            now = time.monotonic()
            should_log = now - self._last_logged.get(where, -_LOG_INTERVAL_S) >= _LOG_INTERVAL_S
            if should_log:
                self._last_logged[where] = now
        if should_log:
            try:
                log.warning(
                    "memprof.internal_error", where=where, error=type(exc).__name__, detail=_safe_detail(exc)
                )
            except Exception:  # pragma: no cover - logging must never hurt the app either
                pass
        for listener in list(self.listeners):
            try:
                listener(where, exc)
            except Exception:  # pragma: no cover
                pass

    @property
    def total(self) -> int:
        """All failures counted so far."""
        return sum(self.counts.values())

    def reinit_after_fork(self) -> None:
        """A forked child gets a fresh lock (another thread may have held the parent's)."""
        self._lock = threading.Lock()

    def status(self) -> dict[str, object]:
        """Counts by place and the last failure, for ``memprof status``."""
        return {"total": self.total, "by_place": dict(self.counts), "last": self.last}

    def reset(self) -> None:
        """Forget the counts (tests)."""
        with self._lock:
            self.counts.clear()
            self.last = None
            self._last_logged.clear()


def _safe_detail(exc: BaseException) -> str:
    try:
        return redact_text(str(exc))
    except Exception:
        return "<unprintable>"


errors = InternalErrors()


def internal_error(where: str, exc: Exception) -> None:
    """Report a failure inside memprof. Re-raises only when the test switch is on."""
    errors.record(where, exc)
    if errors.raise_errors:
        raise exc

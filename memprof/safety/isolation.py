"""Isolation: memprof's own failures are counted and logged, never passed to the app.

Every hook point catches ``Exception`` (never ``BaseException``: cancellation and KeyboardInterrupt
pass) and hands it to :func:`internal_error`, which counts it by place, logs it at most once a minute per
place (the message redacted: an exception's text may quote SQL parameters or headers) and tells the
listeners (the circuit breaker in :mod:`memprof.safety.guards`). With ``MEMPROF_RAISE_INTERNAL_ERRORS=1`` (memprof's own
test suite) the error is re-raised instead, so a bug hidden in production still fails the tests.

Failures of background work (the watchdog's flight recorder, state log, dumps and crash records, the
control poller, exporters) are counted by place too, but they are not the request path's: the listeners
(the breaker) never hear of them, so they never pause profiling. Each background step runs through
:func:`background_step`, which backs that step off on its own (1 s, doubling up to a minute) while it
keeps failing; anything reported while a step runs counts as background.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from memprof import logs as log
from memprof.safety.redaction import redact_text

_LOG_INTERVAL_S = 60.0
RETRY_S = 1.0  # a failing background step is tried again after this, doubling ...
MAX_RETRY_S = 60.0  # ... up to this

T = TypeVar("T")

# The background step running on this thread, if any: what it reports is background.
_running = threading.local()


class StepState:
    """One background step's failures and its backoff."""

    __slots__ = ("consecutive", "failures", "last", "retry_at", "retry_s")

    def __init__(self) -> None:
        self.failures = 0
        self.consecutive = 0
        self.retry_s = 0.0
        self.retry_at = 0.0  # monotonic
        self.last: str | None = None

    def failed(self, now: float, detail: str) -> None:
        self.failures += 1
        self.consecutive += 1
        self.retry_s = min(MAX_RETRY_S, RETRY_S * 2 ** (self.consecutive - 1))
        self.retry_at = now + self.retry_s
        self.last = detail

    def status(self, now: float) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "failing": self.consecutive > 0,
            "retry_in_s": round(max(0.0, self.retry_at - now), 1) if self.consecutive else 0.0,
            "last": self.last,
        }


class InternalErrors:
    """Counts of memprof's own failures, by where they happened."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.request_total = 0  # failures on the request path (what the circuit breaker judges)
        self.steps: dict[str, StepState] = {}
        self.last: tuple[str, str] | None = None
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, BaseException], None]] = []
        self.raise_errors = os.environ.get("MEMPROF_RAISE_INTERNAL_ERRORS", "").lower() in (
            "1",
            "true",
            "yes",
        )

    def record(self, where: str, exc: BaseException, *, background: bool = False) -> None:
        """Count one failure and log it (at most once a minute per place); tell the listeners unless it
        happened in background work (``background``, or inside a :func:`background_step`)."""
        background = background or getattr(_running, "step", None) is not None
        with self._lock:
            self.counts[where] += 1
            if not background:
                self.request_total += 1
            self.last = (where, f"{type(exc).__name__}: {_safe_detail(exc)}")
            now = time.monotonic()
            should_log = now - self._last_logged.get(where, -_LOG_INTERVAL_S) >= _LOG_INTERVAL_S
            if should_log:
                self._last_logged[where] = now
        if should_log:
            try:
                log.warning(
                    "memprof.internal_error",
                    where=where,
                    error=type(exc).__name__,
                    detail=_safe_detail(exc),
                    background=background,
                )
            except Exception:  # pragma: no cover - logging must never hurt the app either
                pass
        if background:
            return
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

    def step(self, place: str) -> StepState:
        """The state of the background step ``place`` (created on first use)."""
        state = self.steps.get(place)
        if state is None:
            with self._lock:
                state = self.steps.setdefault(place, StepState())
        return state

    def status(self) -> dict[str, object]:
        """Counts by place, the request path's share, background steps and the last failure."""
        now = time.monotonic()
        steps = {place: s.status(now) for place, s in sorted(self.steps.items()) if s.failures}
        return {
            "total": self.total,
            "request_path": self.request_total,
            "by_place": dict(self.counts),
            "background": steps,
            "last": self.last,
        }

    def reset(self) -> None:
        """Forget the counts (tests)."""
        with self._lock:
            self.counts.clear()
            self.request_total = 0
            self.steps.clear()
            self.last = None
            self._last_logged.clear()


def _safe_detail(exc: BaseException) -> str:
    try:
        return redact_text(str(exc))
    except Exception:
        return "<unprintable>"


errors = InternalErrors()


def internal_error(where: str, exc: Exception, *, background: bool = False) -> None:
    """Report a failure inside memprof. Re-raises only when the test switch is on and the failure is on
    the request path (a background failure is counted, which fails memprof's tests all the same)."""
    background = background or getattr(_running, "step", None) is not None
    errors.record(where, exc, background=background)
    if errors.raise_errors and not background:
        raise exc


def background_step(place: str, fn: Callable[..., T], *args: Any, backoff: bool = True) -> T | None:
    """Run ``fn(*args)``, one step of background work, guarded: a failure is counted for ``place`` (never reaching the
    circuit breaker) and returns None. With ``backoff`` a failing step is skipped (None) until its retry
    time: 1 s after the first failure, doubling up to a minute; a success resets it."""
    state = errors.step(place)
    now = time.monotonic()
    if backoff and state.consecutive and now < state.retry_at:
        return None
    previous = getattr(_running, "step", None)
    _running.step = place
    try:
        result = fn(*args)
    except Exception as exc:
        state.failed(now, f"{type(exc).__name__}: {_safe_detail(exc)}")
        errors.record(place, exc, background=True)
        return None
    finally:
        _running.step = previous
    if state.consecutive:
        state.consecutive = 0
    return result

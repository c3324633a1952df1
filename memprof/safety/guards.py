"""Self-protection: the circuit breaker (internal failures) and the overhead guard (memprof's own time).

Both are fed from memprof's own code paths and publish their verdict as plain attributes that the
request path reads without a lock or a clock call (``breaker.open``, ``breaker.half_open``,
``guard.steps``); time-based transitions (cooldowns ending) happen in the control poller's tick.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from memprof import events
from memprof import logs as log
from memprof.safety.isolation import errors
from memprof.settings import Mode

COOLDOWN_S = 60.0
MAX_COOLDOWN_S = 3600.0
# The overhead guard looks at the last WINDOW profiled requests and backs off when TRIP_COUNT of them
# went over MEMPROF_OVERHEAD_LIMIT_MS (a single slow request is noise; a fifth of them is a pattern).
OVERHEAD_WINDOW = 100
OVERHEAD_TRIP_COUNT = 20

# From most to least profiling. A guard or a runtime override only ever moves a mode to the right.
MODE_RANK: dict[Mode | None, int] = {Mode.AGGRESSIVE: 3, Mode.LIGHT: 2, Mode.TARGETED: 1, None: 0}


def _weak(callback: Callable[[], None] | None) -> Callable[[], Callable[[], None] | None] | None:
    """A weak reference to ``callback`` (a bound method is referenced weakly: no cycle keeps a runtime)."""
    if callback is None:
        return None
    if hasattr(callback, "__self__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


def narrow(mode: Mode | None, steps: int) -> Mode | None:
    """``mode`` backed off ``steps`` times: aggressive -> light -> off; targeted -> off. None is off."""
    for _ in range(steps):
        if mode is Mode.AGGRESSIVE:
            mode = Mode.LIGHT
        else:
            return None
    return mode


def narrowest(*modes: Mode | None) -> Mode | None:
    """The mode that profiles least (None, off, wins)."""
    return min(modes, key=lambda m: MODE_RANK[m])


class _Backoff:
    """A cooldown that starts at :data:`COOLDOWN_S` and doubles on each consecutive trip, up to 1 h."""

    def __init__(self) -> None:
        self.cooldown_s = COOLDOWN_S
        self.until = 0.0  # monotonic deadline of the current cooldown
        self.trips = 0

    def start(self, now: float) -> None:
        # A trip within one cooldown of the last one ending doubles the cooldown; a later one restarts.
        if self.trips and now - self.until < self.cooldown_s:
            self.cooldown_s = min(self.cooldown_s * 2, MAX_COOLDOWN_S)
        else:
            self.cooldown_s = COOLDOWN_S
        self.trips += 1
        self.until = now + self.cooldown_s

    def reset(self) -> None:
        self.cooldown_s = COOLDOWN_S
        self.trips = 0


class CircuitBreaker:
    """``threshold`` consecutive internal failures open the breaker (no profiling) for a cooldown.

    After the cooldown the breaker is half-open: one trial request is profiled. Its success (a record
    built and the next one started with no failure in between) closes the breaker; a failure opens it
    again with twice the cooldown (60 s doubling up to 1 h).
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, threshold: int, on_change: Callable[[], None] | None = None) -> None:
        self.threshold = threshold
        self.failures = 0  # consecutive
        self.state = self.CLOSED
        self.open = False  # read on the request path
        self.half_open = False  # read on the request path
        self.trial_taken = False
        self.trial_ns = 0
        self.backoff = _Backoff()
        self._on_change = _weak(on_change)
        self._lock = threading.Lock()
        BREAKERS.add(self)

    def reinit_after_fork(self) -> None:
        """A forked child gets a fresh lock (the parent's may have been held by another thread)."""
        self._lock = threading.Lock()

    def failure(self, where: str = "") -> None:
        """One internal failure on the request path (from :func:`memprof.safety.isolation.internal_error`;
        background work's failures never come here)."""
        with self._lock:
            self.failures += 1
            if self.state == self.OPEN:
                return
            if self.state == self.CLOSED and self.failures < self.threshold:
                return
            self._set(self.OPEN)
            self.backoff.start(time.monotonic())
            cooldown = self.backoff.cooldown_s
        log.warning("memprof.circuit_breaker.open", where=where, failures=self.failures, cooldown_s=cooldown)
        events.guard_tripped("circuit_breaker")
        self._changed()

    def success(self) -> None:
        """A profiled request went through without any internal failure."""
        if self.failures == 0 and self.state == self.CLOSED:
            return
        with self._lock:
            self.failures = 0
            if self.state != self.HALF_OPEN:
                return
            self._set(self.CLOSED)
            self.backoff.reset()
        log.info("memprof.circuit_breaker.closed")
        self._changed()

    def check(self, clean: bool, started_ns: int = 0) -> None:
        """Called after each record is built: ``clean`` says no request-path failure happened anywhere in
        the process between the request's start and its end (:meth:`memprof.runtime.Runtime.end`), so a
        failure is never credited to another request whose record happened to be built later.

        While half-open only the trial counts: a record of a request that began before the trial was
        claimed (``started_ns``, ``perf_counter_ns``) says nothing about the trial.
        """
        if self.half_open and started_ns < self.trial_ns:
            return
        if clean:
            self.success()

    def claim_trial(self) -> bool:
        """In the half-open state: True for exactly one caller (the trial request)."""
        with self._lock:
            if self.trial_taken or self.state != self.HALF_OPEN:
                return False
            self.trial_taken = True
            self.trial_ns = time.perf_counter_ns()
            return True

    def tick(self, now: float | None = None) -> None:
        """Move from open to half-open once the cooldown is over (called by the control poller)."""
        if self.state != self.OPEN:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.state != self.OPEN or now < self.backoff.until:
                return
            self._set(self.HALF_OPEN)
        log.info("memprof.circuit_breaker.half_open")
        self._changed()

    def _set(self, state: str) -> None:
        self.state = state
        self.trial_taken = False
        if state == self.HALF_OPEN:
            # Until the trial is claimed no record counts: the background thread builds records in batches,
            # so one built now may belong to a request from before the cooldown.
            self.trial_ns = 1 << 62
        self.open = state == self.OPEN
        self.half_open = state == self.HALF_OPEN

    def _changed(self) -> None:
        callback = self._on_change() if self._on_change is not None else None
        if callback is not None:
            callback()

    def status(self) -> dict[str, Any]:
        """Plain data for ``memprof status``."""
        remaining = max(0.0, self.backoff.until - time.monotonic()) if self.state == self.OPEN else 0.0
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "threshold": self.threshold,
            "cooldown_s": self.backoff.cooldown_s,
            "cooldown_remaining_s": round(remaining, 1),
            "trips": self.backoff.trips,
        }


class OverheadGuard:
    """Backs profiling off one step when memprof's own time per request is too often over the limit.

    :meth:`observe` is called with each profiled request's ``overhead_ns``: a fixed-size window and a
    running count, O(1) and bounded. When :data:`OVERHEAD_TRIP_COUNT` of the last
    :data:`OVERHEAD_WINDOW` requests went over the limit, ``steps`` grows by one (aggressive -> light ->
    off), logged once per step; after a cooldown (60 s doubling up to 1 h) the configured level returns.
    """

    def __init__(self, limit_ms: float, on_change: Callable[[], None] | None = None) -> None:
        self.limit_ns = int(limit_ms * 1e6)
        self.window: deque[bool] = deque(maxlen=OVERHEAD_WINDOW)
        self.over = 0
        self.steps = 0  # read on the request path (through the runtime's effective mode)
        self.backoff = _Backoff()
        self.last_overhead_ms = 0.0
        self._on_change = _weak(on_change)
        self._lock = threading.Lock()

    def reinit_after_fork(self) -> None:
        """A forked child gets a fresh lock."""
        self._lock = threading.Lock()

    def observe(self, overhead_ns: int) -> None:
        """One profiled request's own cost."""
        over = overhead_ns > self.limit_ns
        if not over and not self.over:
            # Nothing in the window is over the limit: nothing to count, no lock (the common case).
            self.window.append(False)
            return
        with self._lock:
            window = self.window
            if len(window) == window.maxlen and window[0]:
                self.over -= 1
            window.append(over)
            if over:
                self.over += 1
            if self.over < OVERHEAD_TRIP_COUNT:
                return
            self.steps += 1
            self.window.clear()
            self.over = 0
            self.backoff.start(time.monotonic())
            steps, cooldown = self.steps, self.backoff.cooldown_s
        self.last_overhead_ms = overhead_ns / 1e6
        log.warning(
            "memprof.overhead_guard.backoff",
            steps=steps,
            limit_ms=self.limit_ns / 1e6,
            over=OVERHEAD_TRIP_COUNT,
            window=OVERHEAD_WINDOW,
            cooldown_s=cooldown,
        )
        events.guard_tripped("overhead")
        self._changed()

    def tick(self, now: float | None = None) -> None:
        """Restore the configured level once the cooldown is over (called by the control poller)."""
        if self.steps == 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.steps == 0 or now < self.backoff.until:
                return
            self.steps = 0
            self.window.clear()
            self.over = 0
        log.info("memprof.overhead_guard.restored")
        self._changed()

    def _changed(self) -> None:
        callback = self._on_change() if self._on_change is not None else None
        if callback is not None:
            callback()

    def status(self) -> dict[str, Any]:
        """Plain data for ``memprof status``."""
        remaining = max(0.0, self.backoff.until - time.monotonic()) if self.steps else 0.0
        return {
            "state": "backed_off" if self.steps else "ok",
            "steps": self.steps,
            "limit_ms": self.limit_ns / 1e6,
            "over_in_window": self.over,
            "window": len(self.window),
            "cooldown_remaining_s": round(remaining, 1),
            "trips": self.backoff.trips,
        }


BREAKERS: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def _feed_breakers(where: str, exc: BaseException) -> None:
    for breaker in list(BREAKERS):
        breaker.failure(where)


if _feed_breakers not in errors.listeners:
    errors.listeners.append(_feed_breakers)

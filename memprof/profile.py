"""The per-request profile, the context variable that carries it, and the checkpoint API.

A :class:`RequestProfile` holds only plain data (numbers and strings), never the app's objects, so a
profile handed to the background thread keeps nothing of the request alive. Integrations (SQLAlchemy,
sessions) attach a collector to ``profile.sections``; each collector turns its data into one section
of the ``sample`` record on the background thread.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, cast

from memprof.heap import heap_at
from memprof.memory import rss_at
from memprof.safety.isolation import internal_error

MAX_CHECKPOINTS = 200

# Request ids: a random per-process prefix and a counter (uuid4 costs 2 µs on the request path).
_id_prefix = os.urandom(4).hex()
_id_counter = itertools.count(1)


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): request ids of its own."""
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(4).hex()
    _id_counter = itertools.count(1)


F = TypeVar("F", bound=Callable[..., Any])


# The memory watchdog's alarm: a checkpoint reading RSS at or above this level calls the callback, so
# growth inside a profiled request is checked at once (see memprof.watchdog). Off: sys.maxsize.
_rss_alarm = sys.maxsize
_alarm_callback: Callable[[RequestProfile, int], None] | None = None


def set_rss_alarm(level: int, callback: Callable[[RequestProfile, int], None] | None) -> None:
    """Call ``callback(profile, rss)`` from checkpoints whose RSS is at least ``level`` (None: off)."""
    global _rss_alarm, _alarm_callback
    _alarm_callback = callback
    _rss_alarm = level if callback is not None else sys.maxsize


class SectionCollector(Protocol):
    """Something an integration attaches to a profile; it becomes one section of the sample record."""

    def to_record(self) -> Any:
        """Return the section's JSON-ready data (called once, on the background thread)."""
        ...


class RequestProfile:
    """Memory checkpoints and everything else memprof learns about one profiled request.

    Fields that most requests never change are class-level defaults, so that starting a profile on the
    request path sets only what every request has (half the cost of setting them all).
    """

    route: str | None = None
    status: int | None = None
    error: str | None = None
    duration_ms = 0.0
    dropped_checkpoints = 0
    rss_start = 0
    rss_end = 0
    heap_start = 0
    heap_peak = 0
    heap_end = 0
    heap_source: str | None = None  # None: the source changed during the request (no heap figures)
    peak_start = 0
    peak_end = 0
    concurrency_start = 0
    concurrency_max = 0
    overhead_ns = 0
    finished = False
    errors_at_start = 0  # the process's request-path failures when it began (the circuit breaker's)
    clean = False  # no request-path failure in the process between its start and its end

    def __init__(self, method: str, path: str, mode: str, full: bool) -> None:
        self.start_ns = time.perf_counter_ns()
        self.start_time = time.time()
        self.request_id = f"{_id_prefix}{next(_id_counter):08x}"
        self.method = method
        self.path = path
        self.mode = mode
        self.full = full
        # Each checkpoint: (name, ns since start, rss, heap, extra dict or None)
        self.checkpoints: list[tuple[str, int, int, int, dict[str, Any] | None]] = []
        self.sections: dict[str, SectionCollector] = {}

    def add_checkpoint(
        self,
        name: str,
        rss: int | None = None,
        extra: dict[str, Any] | None = None,
        now: int | None = None,
        since: int | None = None,
    ) -> None:
        """Record a named point: time since start, RSS (read now unless given) and heap (a fresh reading
        when the last one was made at or before ``since``, a span's start)."""
        if self.finished:
            return
        if len(self.checkpoints) >= MAX_CHECKPOINTS:
            self.dropped_checkpoints += 1
            return
        t0 = time.perf_counter_ns()
        if rss is None:
            rss = rss_at(t0)
        heap = heap_at(t0, since)
        if heap > self.heap_peak:
            self.heap_peak = heap
        self.checkpoints.append((name, (now or t0) - self.start_ns, rss, heap, extra))
        if rss >= _rss_alarm and _alarm_callback is not None:
            _alarm_callback(self, rss)
        self.overhead_ns += time.perf_counter_ns() - t0

    def note_heap(self, heap: int) -> None:
        """A heap reading made for this request outside a checkpoint (an SQL statement's end)."""
        if heap > self.heap_peak:
            self.heap_peak = heap

    def heap_record(self) -> dict[str, Any] | None:
        """The sample record's ``memory.heap`` (None when the source changed during the request)."""
        if self.heap_source is None:
            return None
        return {
            "start": self.heap_start,
            "peak": self.heap_peak,
            "end": self.heap_end,
            "source": self.heap_source,
        }

    @property
    def heap_growth(self) -> int:
        """The highest heap reading so far minus the one at the start, in bytes."""
        return self.heap_peak - self.heap_start

    @property
    def elapsed_ms(self) -> float:
        """Milliseconds since the request started."""
        return (time.perf_counter_ns() - self.start_ns) / 1e6

    def summary(self) -> dict[str, Any]:
        """A small view of an in-flight request, for dumps and the flight recorder (no secrets)."""
        return {
            "id": self.request_id,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "started": self.start_time,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "rss_start": self.rss_start,
            "heap_start": self.heap_start,
            "heap_growth": self.heap_growth,
            "checkpoints": [name for name, *_ in self.checkpoints],
        }


_current: ContextVar[RequestProfile | None] = ContextVar("memprof_profile", default=None)


def current_profile() -> RequestProfile | None:
    """The profile of the request being handled in this context, or None."""
    return _current.get()


class _CheckpointScope:
    """``checkpoint("name")``: a context manager and a decorator (sync and async)."""

    __slots__ = ("_heap", "_name", "_profile", "_rss", "_t0")

    def __init__(self, name: str) -> None:
        self._name = name
        self._profile: RequestProfile | None = None
        self._rss = 0
        self._heap = 0
        self._t0 = 0

    def __enter__(self) -> _CheckpointScope:
        profile = _current.get()
        if profile is not None and not profile.finished:
            try:
                self._profile = profile
                self._t0 = time.perf_counter_ns()
                self._rss = rss_at(self._t0)
                self._heap = heap_at(self._t0)
                profile.overhead_ns += time.perf_counter_ns() - self._t0
            except Exception as exc:
                self._profile = None
                internal_error("checkpoint", exc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        profile = self._profile
        if profile is None:
            return
        self._profile = None
        try:
            now = time.perf_counter_ns()
            rss = rss_at(now)
            extra = {
                "rss_before": self._rss,
                "heap_before": self._heap,
                "duration_ms": round((now - self._t0) / 1e6, 3),
                "error": exc_info[0] is not None,
            }
            profile.add_checkpoint(self._name, rss=rss, extra=extra, now=now, since=self._t0)
        except Exception as exc:
            internal_error("checkpoint", exc)

    async def __aenter__(self) -> _CheckpointScope:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func: F) -> F:
        name = self._name
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _current.get() is None:
                    return await func(*args, **kwargs)
                with _CheckpointScope(name):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _current.get() is None:
                return func(*args, **kwargs)
            with _CheckpointScope(name):
                return func(*args, **kwargs)

        return cast(F, wrapper)


class _CheckpointAPI:
    """The public ``checkpoint`` object: ``checkpoint("x")`` and ``checkpoint.mark("x")``."""

    __slots__ = ()

    def __call__(self, name: str) -> _CheckpointScope:
        """A named span: use as ``with checkpoint("x"):`` or as a decorator ``@checkpoint("x")``.

        Records RSS, heap and time before and after. A no-op outside a profiled request.
        """
        return _CheckpointScope(name)

    def mark(self, name: str) -> None:
        """Record a single named point (time, RSS and heap) in the current profiled request, if any."""
        profile = _current.get()
        if profile is not None:
            try:
                profile.add_checkpoint(name)
            except Exception as exc:
                internal_error("checkpoint", exc)


checkpoint = _CheckpointAPI()

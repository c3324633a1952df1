"""The memory watchdog: a job of memprof's background thread that watches RSS against each runtime's limit.

Every ``MEMPROF_WATCHDOG_INTERVAL_MS`` it reads RSS (one ``pread``; when the limit is a cgroup's, the
larger of RSS and the cgroup's anonymous memory, since a container's workers share its limit), and for
each runtime:

- past ``MEMPROF_DUMP_THRESHOLD`` of the limit it raises ``runtime.memory_guard`` (profiles drop to
  checkpoints only) and takes a ``threshold`` dump for each new high-water mark (at least
  ``DUMP_STEP`` of the limit above the last one), no sooner than ``MEMPROF_DUMP_COOLDOWN_S`` after
  the previous dump; below the threshold minus ``MEMPROF_DUMP_HYSTERESIS`` the guard drops again;
- it keeps the flight recorder file up to date, turns files of dead workers into crash records once at
  start-up, and records cache state at start-up, 10, 30 and 60 s later, then every
  ``MEMPROF_STATE_INTERVAL_S``, and at shutdown (dumps add one each, see :mod:`memprof.state`).

Checkpoints of profiled requests that read an RSS past the alarm level wake the thread at once (see
:func:`memprof.profile.set_rss_alarm`), so a request growing between two ticks is caught at its own
checkpoint. A threshold dump names the profiled request in flight whose heap grew the most (see
:func:`memprof.dump.costliest`), which on a warm heap is not always the one whose reading crossed the
line. The job starts when a runtime starts serving (its first request or lifespan start-up, never at
import), leaves the thread when none is watched, and a forked child starts its own when it serves.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from memprof import events
from memprof import profile as profile_module
from memprof.background import BACKGROUND, acquire
from memprof.memory import cgroup_memory, peak_rss_bytes, rss_bytes
from memprof.profile import RequestProfile
from memprof.routes import route_template
from memprof.runtime import Runtime, Scope
from memprof.safety.isolation import background_step
from memprof.watchdog.dump import costliest, inflight_summaries, pick_request, write_dump
from memprof.watchdog.flight import MAX_INFLIGHT, FlightRecorder, collect_crashes
from memprof.watchdog.requests import RequestWatch
from memprof.watchdog.signals import install_dump_signal
from memprof.watchdog.state import StateLog

DUMP_STEP = 0.02  # a new high-water mark is at least this fraction of the limit above the last dump
# Cache state early in a worker's life (seconds after its start-up observation), then every interval: a
# cache that fills in the first minutes is seen growing long before the first periodic observation.
EARLY_STATE_S = (10.0, 30.0, 60.0)


class Guard:
    """The watchdog's state for one runtime: high-water mark, last dump, whether it shut down."""

    __slots__ = ("closed", "high_water", "last_dump", "threshold")

    def __init__(self) -> None:
        self.high_water = 0
        self.last_dump = -1e18
        self.threshold = sys.maxsize
        self.closed = False


class _Group:
    """What is kept per data dir: the flight recorder and the state log."""

    def __init__(self, data_dir: Path, host: str) -> None:
        self.flight = FlightRecorder(data_dir, host)
        self.state = StateLog(data_dir, host)
        self.created = self.last_state = time.monotonic()
        self.early = list(EARLY_STATE_S)
        self.started = False
        self.requests = RequestWatch(data_dir, self.flight.started)

    def state_due(self, now: float, interval: float) -> bool:
        """Whether a periodic cache observation is due: ``interval`` after the last, or an early one."""
        due = now - self.last_state >= interval
        while self.early and now - self.created >= self.early[0]:
            self.early.pop(0)
            due = True
        if due:
            self.last_state = now
        return due


class Watchdog:
    """The process's watchdog (a job of :mod:`memprof.background`) and the runtimes it watches."""

    def __init__(self) -> None:
        self.guards: weakref.WeakKeyDictionary[Runtime, Guard] = weakref.WeakKeyDictionary()
        self._reset()

    def _reset(self) -> None:
        self.groups: dict[Path, _Group] = {}
        self.pending: list[tuple[weakref.ref[Runtime], str, dict[str, Any] | None]] = []
        self.poked: RequestProfile | None = None
        self.signalled = False
        # Guards and groups: held only for a few dict operations, never across I/O. A shutdown never
        # waits for a tick: a flight recorder closed by a shutdown is not rewritten (FlightRecorder.remove).
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.ticks = 0
        self._last_tick = 0.0

    # -- attaching ---------------------------------------------------------------------------------
    def attach(self, runtime: Runtime) -> None:
        """Watch ``runtime`` (called when it starts serving) and run the job."""
        if not runtime.enabled or runtime.settings.watchdog_interval_ms <= 0:
            return
        with self.lock:
            self.guards[runtime] = Guard()
        if runtime.settings.dump_signal and threading.current_thread() is threading.main_thread():
            install_dump_signal(runtime.settings.dump_signal, self._on_signal)
        self._update_alarm()
        self.start()

    def start(self) -> None:
        """Run the job on the background thread (idempotent)."""
        BACKGROUND.add(self)

    def _on_signal(self) -> None:
        # Runs in a signal handler: no lock (the main thread may hold it), only a flag the thread reads.
        self.signalled = True

    def _open(self) -> list[tuple[Runtime, Guard]]:
        with self.lock:
            return [(r, g) for r, g in self.guards.items() if not g.closed and r.enabled]

    def _interval(self, watched: list[tuple[Runtime, Guard]]) -> float:
        return min(r.settings.watchdog_interval_ms for r, _ in watched) / 1000.0

    # -- the job (see memprof.background.Job) ------------------------------------------------------
    def due(self) -> float | None:
        """At once when a dump was asked for or a checkpoint poked; else every interval; None when no
        runtime is watched and no dump is pending."""
        if self.pending or self.poked is not None or self.signalled:
            return 0.0
        watched = self._open()
        if not watched:
            return None
        return self._last_tick + self._interval(watched)

    def run(self) -> None:
        """One tick: memory checks, dumps asked for, flight files and state lines."""
        self._last_tick = time.monotonic()
        watched = self._open()
        if watched:
            self.tick(watched)
        else:
            self._serve_pending()

    # -- one tick ----------------------------------------------------------------------------------
    def tick(self, watched: list[tuple[Runtime, Guard]]) -> None:
        """Check memory for every runtime, serve pending dumps, update flight files and state logs."""
        watched = [(r, g) for r, g in watched if not g.closed]
        self.ticks += 1
        poked, self.poked = self.poked, None
        anon: int | None = None
        if any(r.limit.source.startswith("cgroup") for r, _ in watched):
            # A container's limit covers all its processes (several workers): judge by the cgroup's
            # anonymous memory too, not by page cache (memory.current counts reclaimable cache).
            value = cgroup_memory().get("anon")
            anon = value if isinstance(value, int) else None
        for runtime, guard in watched:
            level = rss_bytes()
            if anon is not None and runtime.limit.source.startswith("cgroup"):
                level = max(level, anon)
            self.check(runtime, guard, level, poked)
        self._serve_pending()
        if self.signalled:
            self.signalled = False
            for runtime, _guard in watched:
                if runtime.settings.dump_signal:
                    _dump(runtime, "signal", None, pick_request(runtime))
        rss = rss_bytes()
        peak = peak_rss_bytes()
        by_dir: dict[Path, list[Runtime]] = {}
        for runtime, _guard in watched:
            by_dir.setdefault(runtime.settings.data_dir, []).append(runtime)
        for data_dir, group_runtimes in by_dir.items():
            group = self._group(data_dir, group_runtimes)
            if group is None:
                continue  # shut down since the tick began
            # Each step on its own: a failing one (a full or read-only disk) is counted for its place and
            # backs off by itself, never stopping the others nor reaching the request path's breaker.
            if not group.started:
                group.started = True
                background_step("crash_records", collect_crashes, data_dir, "startup", group_runtimes[0].host)
                background_step("flight", self._update_flight, group, group_runtimes, rss, peak, True)
                background_step("state_log", group.state.record, "startup")
            background_step("flight", self._update_flight, group, group_runtimes, rss, peak)
            asked = background_step("dump_request", group.requests.poll)
            if asked is not None:
                runtime = group_runtimes[0]
                _dump(runtime, "manual", asked["name"], pick_request(runtime))
            interval = min(r.settings.state_interval_s for r in group_runtimes)
            if interval > 0 and group.state_due(time.monotonic(), interval):
                background_step("state_log", group.state.record, "periodic")
        self._update_alarm()  # a cooldown may have ended

    def _group(self, data_dir: Path, runtimes: list[Runtime]) -> _Group | None:
        """The group of a data dir, made when missing, unless every runtime of it shut down meanwhile."""
        with self.lock:
            if all(g is None or g.closed for g in (self.guards.get(r) for r in runtimes)):
                return None
            group = self.groups.get(data_dir)
            if group is None:
                group = self.groups[data_dir] = _Group(data_dir, runtimes[0].host)
            return group

    @staticmethod
    def _update_flight(
        group: _Group, runtimes: list[Runtime], rss: int, peak: int, force: bool = False
    ) -> None:
        """Hand the flight recorder what it writes: the requests in flight and the memory figures."""
        inflight: list[dict[str, Any]] = []
        for runtime in runtimes:
            inflight.extend(inflight_summaries(runtime, MAX_INFLIGHT - len(inflight)))
        total = sum(r.inflight for r in runtimes)
        limit = max((r.limit.bytes for r in runtimes), default=0)
        group.flight.update(inflight, total, limit, rss, peak, force=force)

    def check(self, runtime: Runtime, guard: Guard, rss: int, poked: RequestProfile | None = None) -> None:
        """The memory guard and threshold dumps of one runtime for one RSS reading."""
        settings = runtime.settings
        limit = runtime.limit.bytes
        threshold = limit * settings.dump_threshold
        if rss >= threshold:
            if not runtime.memory_guard:
                runtime.memory_guard = True
                events.guard_tripped("memory")
            now = time.monotonic()
            if (
                rss >= guard.high_water + DUMP_STEP * limit
                and now - guard.last_dump >= settings.dump_cooldown_s
            ):
                guard.last_dump = now
                guard.high_water = rss
                # The request whose heap grew the most, not whichever read RSS past the alarm (the
                # one that raised the high-water mark is often a small request after the big one).
                _dump(runtime, "threshold", None, costliest(runtime, fallback=poked), wait=0.0)
                self._update_alarm()
        elif runtime.memory_guard and rss < limit * (settings.dump_threshold - settings.dump_hysteresis):
            runtime.memory_guard = False
            guard.high_water = 0  # a new climb past the threshold is worth a new dump
            self._update_alarm()

    def _update_alarm(self, timeout: float = -1) -> None:
        """Set the checkpoint alarm to the lowest level at which some runtime would dump now.

        A runtime in its cooldown raises no alarm: checkpoints would wake the thread for nothing.
        """
        level = sys.maxsize
        now = time.monotonic()
        if not self.lock.acquire(timeout=timeout):
            return  # (a shutdown that could not take the lock: the alarm stays as it is)
        try:
            for runtime, guard in list(self.guards.items()):
                if guard.closed or now - guard.last_dump < runtime.settings.dump_cooldown_s:
                    continue
                limit = runtime.limit.bytes
                mark = max(limit * runtime.settings.dump_threshold, guard.high_water + DUMP_STEP * limit)
                level = min(level, int(mark))
        finally:
            self.lock.release()
        profile_module.set_rss_alarm(level, self.poke if level < sys.maxsize else None)

    def poke(self, profile: RequestProfile, rss: int) -> None:
        """Called from a checkpoint whose RSS passed the alarm level: check now, about that request."""
        self.poked = profile
        BACKGROUND.wake()

    # -- dumps asked for from the request path -----------------------------------------------------
    def request_dump(self, runtime: Runtime, trigger: str, request: dict[str, Any] | None) -> None:
        """Queue a dump to be written by the thread (the request path never writes one itself)."""
        with self.lock:
            if len(self.pending) < 4:
                self.pending.append((weakref.ref(runtime), trigger, request))
        self.start()

    def _serve_pending(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for ref, trigger, request in pending:
            runtime = ref()
            if runtime is not None:
                _dump(runtime, trigger, None, None, request=request)

    # -- shutdown and fork -------------------------------------------------------------------------
    def shutdown(self, runtime: Runtime, timeout: float = 5.0) -> None:
        """A clean shutdown of ``runtime``: final state line, then (last, whatever failed before) the
        flight file removed when it was the last runtime of its data dir. Never waits for a tick; the
        lock (a few dict operations) is waited for at most ``timeout`` seconds, then done without."""
        locked = acquire(self.lock, timeout, "the watchdog's lock at shutdown")
        try:
            guard = self.guards.get(runtime)
            if guard is None or guard.closed:
                return
            guard.closed = True
            others = [
                r
                for r, g in list(self.guards.items())
                if not g.closed and r.settings.data_dir == runtime.settings.data_dir
            ]
            group = None if others else self.groups.pop(runtime.settings.data_dir, None)
        finally:
            if locked:
                self.lock.release()
        if group is not None:
            if group.started:
                background_step("state_log", group.state.record, "shutdown", backoff=False)
            background_step("flight", group.flight.remove, backoff=False)  # last, whatever failed before
        if locked:
            self._update_alarm(timeout)

    # -- events from the runtime (see memprof.runtime.Background) --------------------------------------
    def on_begin(self, runtime: Runtime) -> None:
        """Remember the event loop serving requests (weakly), so dumps can list its tasks."""
        if runtime.loop_ref is None:
            try:
                runtime.loop_ref = weakref.ref(asyncio.get_running_loop())
            except (RuntimeError, TypeError):
                pass

    def on_memory_error(self, runtime: Runtime, scope: Scope) -> None:
        """A ``MemoryError`` passed through the middleware: queue a ``memory_error`` dump naming the request."""
        request = {
            "id": None,
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "route": route_template(scope),
            "started": None,
            "elapsed_ms": None,
            "rss_start": None,
            "checkpoints": [],
        }
        self.request_dump(runtime, "memory_error", request)

    def after_fork(self) -> None:
        """In a forked child: fresh lock and state; a runtime that serves there is attached again."""
        self.guards = weakref.WeakKeyDictionary()
        self._reset()


def _dump(
    runtime: Runtime, trigger: str, name: str | None, profile: RequestProfile | None, **kw: Any
) -> None:
    """A dump from the watchdog (background thread): its failure is the ``dump`` step's (dumps have their cooldown)."""
    background_step(
        "dump", functools.partial(write_dump, runtime, trigger, name, profile, **kw), backoff=False
    )


WATCHDOG = Watchdog()

"""The runtime behind the middleware: settings, sampling, in-flight requests, record building.

One :class:`Runtime` per middleware instance, inert until it serves (:mod:`memprof.lifecycle`). The request
path calls :meth:`Runtime.begin` and :meth:`Runtime.end`; everything slow (records, JSON, files, logging)
happens on the background thread. Integrations register hooks run when a profiled request starts or ends.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from memprof import heap_peak
from memprof.heap import heap_at, heap_source
from memprof.memory import MemoryLimit, detect_limit, peak_at, rss_at
from memprof.profile import RequestProfile
from memprof.routes import find_route_template
from memprof.safety.control import POLLER, Controller
from memprof.safety.guards import CircuitBreaker, OverheadGuard
from memprof.safety.isolation import errors, internal_error
from memprof.safety.tokens import TokenVerifier
from memprof.sample import build_sample
from memprof.settings import DEFAULT_SAMPLE_RATES, MemprofSettings, Mode
from memprof.writer import RecordWriter

Scope = MutableMapping[str, Any]
ProfileHook = Callable[[RequestProfile, Scope], None]

# Hooks integrations register: called on the request path (guarded) for full-detail profiles.
START_HOOKS: list[ProfileHook] = []
FINISH_HOOKS: list[ProfileHook] = []
# Called (guarded) for every profiled request, checkpoints-only included, with the request's context
# current: at the response's last body message, before it is sent (OpenTelemetry's ASGI middleware ends
# its server span right after it), and once the profile's figures are final (after background tasks).
EndHook = Callable[[RequestProfile, "Runtime", Scope], None]
RESPONSE_END_HOOKS: list[EndHook] = []
COMPLETE_HOOKS: list[EndHook] = []

_MB = 1024 * 1024
OFF_MODE = "off"
SHUTDOWN_TIMEOUT_S = 5.0
# Enum members as module constants: ``Mode.TARGETED`` is an attribute lookup on the enum class that costs
# ~0.1 µs on Python 3.11, more than the rest of an unsampled request's decision.
_TARGETED = Mode.TARGETED
_AGGRESSIVE = Mode.AGGRESSIVE


def register_hooks(
    *,
    on_start: ProfileHook | None = None,
    on_finish: ProfileHook | None = None,
    on_response_end: EndHook | None = None,
    on_complete: EndHook | None = None,
) -> None:
    """Register an integration's hooks once (idempotent). ``on_start``/``on_finish`` run for full-detail
    profiles; ``on_response_end`` for every profiled request when the last body message is about to be
    sent, ``on_complete`` for every profiled request once rss_end, peak, route and duration are set."""
    if on_start is not None and on_start not in START_HOOKS:
        START_HOOKS.append(on_start)
    if on_finish is not None and on_finish not in FINISH_HOOKS:
        FINISH_HOOKS.append(on_finish)
    if on_response_end is not None and on_response_end not in RESPONSE_END_HOOKS:
        RESPONSE_END_HOOKS.append(on_response_end)
    if on_complete is not None and on_complete not in COMPLETE_HOOKS:
        COMPLETE_HOOKS.append(on_complete)


class Background(Protocol):
    """What the runtime hands to its background side (the watchdog), wired by the composition root."""

    def attach(self, runtime: Runtime) -> None:
        """Start watching ``runtime``."""

    def on_begin(self, runtime: Runtime) -> None:
        """The first profiled request began (the serving event loop is current)."""

    def on_memory_error(self, runtime: Runtime, scope: Scope) -> None:
        """A ``MemoryError`` passed through the middleware for the request of ``scope``."""

    def shutdown(self, runtime: Runtime, timeout: float) -> None:
        """A clean shutdown of ``runtime``, waiting for nothing longer than ``timeout`` seconds."""


class Runtime:
    """State shared by every request a middleware instance sees. ``background`` (the watchdog) is given
    by the composition root, :class:`memprof.middleware.MemprofMiddleware`: nothing above is imported."""

    def __init__(self, settings: MemprofSettings, background: Background | None = None) -> None:
        self.background = background
        self.settings = settings
        self.limit: MemoryLimit = detect_limit(settings.memory_limit_bytes)
        self.mode: Mode = settings.mode
        self.sample_rate = settings.effective_sample_rate
        self.enabled = settings.enabled
        # Started in this process and not shut down (read per request); stopping: a stop signal came.
        self.serving = self.stopping = False
        self.writer = RecordWriter(
            settings.data_dir,
            max_file_bytes=int(settings.max_file_mb * _MB),
            max_total_bytes=int(settings.max_total_mb * _MB),
            queue_size=settings.queue_size,
            log_events=settings.log_events,
        )
        self.host = socket.gethostname()
        self.inflight = 0
        self.active: dict[str, RequestProfile] = {}
        self.profiled = 0
        self.started = time.time()
        # A clean shutdown: when, and how many requests were profiled by then (serving again un-stops it).
        self.stopped: tuple[float, int] | None = None
        # Raised by the watchdog past the dump threshold: profiles drop to checkpoints only.
        self.memory_guard = False
        # Scopes of in-flight profiled requests (their route, for dumps and the flight recorder); popped in end().
        self.scopes: dict[str, Scope] = {}
        # In-flight requests that are not profiled, by id(scope): (unix start time, scope), for the same.
        self.unprofiled: dict[int, tuple[float, Scope]] = {}
        self.loop_ref: weakref.ref[Any] | None = None  # the serving event loop, for dumps' task stacks
        # Safety: why nothing is profiled right now (None: profiling per self.mode), the guards, the
        # token verifier and the control plane. The request path reads only these cached attributes.
        self.paused: str | None = None
        self.breaker = CircuitBreaker(settings.circuit_breaker_failures, on_change=self.refresh)
        self.guard = OverheadGuard(settings.overhead_limit_ms, on_change=self.refresh)
        secret = settings.targeted_secret
        self.verifier = (
            None
            if secret is None
            else TokenVerifier(
                secret.get_secret_value(),
                rate_per_s=settings.targeted_rate_limit,
                max_skew_s=settings.targeted_max_skew_s,
            )
        )
        self._refresh_lock = threading.Lock()
        self.control = Controller(settings, self)
        self.control.read_local()  # a kill-switch file present at start-up counts from the first request
        self.refresh()
        _RUNTIMES.append(weakref.ref(self))

    def start(self) -> None:
        """Serve in this process (:func:`memprof.lifecycle.serve`): control and status, the watchdog."""
        self.serving, self.stopping = True, False
        POLLER.add(self.control)
        self._tell_background("attach", lambda b: b.attach(self))

    # -- sampling ---------------------------------------------------------------------------------
    def decide(self, scope: Scope) -> bool | None:
        """None: do not profile. Otherwise whether to collect full detail (True) or checkpoints only.

        An unprofiled request costs a flag read, a random draw and a branch; targeted mode checks the
        signed header. A half-open circuit breaker lets exactly one trial request through.
        """
        if self.paused is not None:
            return None
        mode = self.mode
        if mode is _TARGETED:
            verifier = self.verifier
            if verifier is None or not verifier.check_scope(scope):
                return None
            full = True
        else:
            rate = self.sample_rate
            if rate <= 0.0 or (rate < 1.0 and random.random() >= rate):
                return None
            full = mode is _AGGRESSIVE
        if self.breaker.half_open and not self.breaker.claim_trial():
            return None
        return full

    def refresh(self) -> None:
        """Recompute the mode in force from local settings, runtime control and the guards."""
        with self._refresh_lock:
            mode, reason = self.control.resolve(self.breaker.open, self.guard.steps)
            if mode is None:
                self.paused = reason
                return
            settings = self.settings
            self.sample_rate = (
                settings.effective_sample_rate if mode is settings.mode else DEFAULT_SAMPLE_RATES[mode]
            )
            self.mode = mode
            self.paused = None

    def status(self) -> dict[str, Any]:
        """This runtime's state as plain data (published for ``memprof status``)."""
        stopped = self.stopped if self.stopped and self.stopped[1] == self.profiled else None
        return {
            "schema": "memprof.worker_status",
            "version": "2.0",
            "worker": f"{self.host}-{os.getpid()}",
            "host": self.host,
            "pid": os.getpid(),
            "time": time.time(),
            "started": self.started,
            "configured_mode": self.settings.mode.value,
            "mode": OFF_MODE if self.paused is not None else self.mode.value,
            "paused": self.paused,
            "sample_rate": self.sample_rate,
            "profiled": self.profiled,
            "inflight": self.inflight,
            "stopped": None if stopped is None else stopped[0],
            "breaker": self.breaker.status(),
            "overhead_guard": self.guard.status(),
            "targeted": None if self.verifier is None else self.verifier.status(),
            "internal_errors": errors.status(),
            "writer": self.writer.counts(),
            "control": self.control.status(),
        }

    def reinit_after_fork(self) -> None:
        """Fresh locks in a forked child (see :mod:`memprof.forksafe`), which serves only once it starts;
        the parent's requests in flight are not the child's."""
        self._refresh_lock = threading.Lock()
        self.serving = self.stopping = False
        self.inflight, self.active, self.scopes, self.unprofiled = 0, {}, {}, {}
        self.breaker.reinit_after_fork()
        self.guard.reinit_after_fork()
        if self.verifier is not None:
            self.verifier.reinit_after_fork()

    def _tell_background(self, place: str, call: Callable[[Background], None]) -> None:
        """Hand an event to the background side, guarded: its failure never reaches the request."""
        if self.background is not None:
            try:
                call(self.background)
            except Exception as exc:
                internal_error(f"watchdog_{place}", exc)

    # -- a profiled request -----------------------------------------------------------------------
    def begin(self, scope: Scope, full: bool) -> RequestProfile:
        """Start a profile: RSS, peak, concurrency, the ``request_start`` checkpoint, start hooks."""
        t0 = time.perf_counter_ns()
        if full and self.memory_guard:
            full = False
        profile = RequestProfile(scope.get("method", ""), scope.get("path", ""), self.mode, full)
        rss = rss_at(profile.start_ns)
        profile.rss_start = rss
        # ru_maxrss is kept lazily by the kernel: never report a peak below a reading we made.
        profile.peak_start = max(peak_at(profile.start_ns), rss)
        profile.heap_start = profile.heap_peak = heap = heap_at(profile.start_ns)
        profile.heap_source = heap_source()
        profile.concurrency_start = profile.concurrency_max = self.inflight
        profile.errors_at_start = errors.request_total
        profile.checkpoints.append(("request_start", 0, rss, heap, None))
        self.active[profile.request_id] = profile
        self.scopes[profile.request_id] = scope
        if self.loop_ref is None:
            self._tell_background("on_begin", lambda b: b.on_begin(self))
        self.profiled += 1
        if full:
            for hook in START_HOOKS:
                try:
                    hook(profile, scope)
                except Exception as exc:
                    internal_error(f"start_hook:{getattr(hook, '__name__', hook)}", exc)
        heap_peak.started()  # heap readings at its garbage collections (until end())
        profile.overhead_ns += time.perf_counter_ns() - t0
        return profile

    def note_request_started(self) -> None:
        """Called for every request after ``inflight`` went up: raise in-flight profiles' maximum."""
        n = self.inflight
        for profile in self.active.values():
            if n > profile.concurrency_max:
                profile.concurrency_max = n

    def response_end(self, profile: RequestProfile, scope: Scope) -> None:
        """The response's last body message is about to be sent: run the response-end hooks (guarded)."""
        t0 = time.perf_counter_ns()
        for hook in RESPONSE_END_HOOKS:
            try:
                hook(profile, self, scope)
            except Exception as exc:
                internal_error(f"response_end_hook:{getattr(hook, '__name__', hook)}", exc)
        profile.overhead_ns += time.perf_counter_ns() - t0

    def end(self, profile: RequestProfile, scope: Scope) -> None:
        """Finish a profile on the request path (cheap) and hand it to the background thread."""
        t0 = time.perf_counter_ns()
        self.active.pop(profile.request_id, None)
        self.scopes.pop(profile.request_id, None)
        try:
            if profile.route is None:  # (found at the response's end by the OpenTelemetry hook)
                profile.route = find_route_template(scope)
            if profile.full:
                for hook in FINISH_HOOKS:
                    try:
                        hook(profile, scope)
                    except Exception as exc:
                        internal_error(f"finish_hook:{getattr(hook, '__name__', hook)}", exc)
            now = time.perf_counter_ns()
            rss = rss_at(now)
            profile.heap_end = heap = heap_at(now, profile.start_ns)  # never the reading of its start
            profile.note_heap(heap)
            if heap_source() != profile.heap_source:
                profile.heap_source = None  # tracing started or stopped meanwhile: figures not comparable
            profile.checkpoints.append(("request_end", now - profile.start_ns, rss, heap, None))
            profile.rss_end = rss
            profile.peak_end = max(peak_at(now), rss, profile.peak_start)
            profile.duration_ms = (now - profile.start_ns) / 1e6
            for done in COMPLETE_HOOKS:
                try:
                    done(profile, self, scope)
                except Exception as exc:
                    internal_error(f"complete_hook:{getattr(done, '__name__', done)}", exc)
        finally:
            profile.finished = True
            # no request-path failure in the process while it ran (what the breaker credits, see check)
            profile.clean = errors.request_total == profile.errors_at_start
            heap_peak.ended()
            profile.overhead_ns += time.perf_counter_ns() - t0
        self.guard.observe(profile.overhead_ns)
        self.writer.submit(profile, self._build_checked)

    def _build_checked(self, profile: RequestProfile) -> dict[str, Any]:
        # A record built for a request during which nothing failed is a success for the breaker.
        record = self.build_record(profile)
        self.breaker.check(profile.clean, profile.start_ns)
        return record

    def memory_error(self, scope: Scope) -> None:
        """A ``MemoryError`` passed through the middleware: the watchdog writes a dump naming the request."""
        self._tell_background("on_memory_error", lambda b: b.on_memory_error(self, scope))

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Clean shutdown (lifespan, stop signal, exit), waiting at most ``timeout`` s for each step:
        records written out, the final status published (its counts exact: every record written or
        counted as dropped), the final cache state, and last, whatever failed (a full disk), the flight
        file removed. A request arriving later starts serving again."""
        self.serving = False
        try:
            self.writer.flush(timeout)
        except Exception as exc:
            internal_error("shutdown_flush", exc)
        finally:
            try:
                self.stopped = (time.time(), self.profiled)
                self.control.publish_final(timeout)
            except Exception as exc:
                internal_error("shutdown_status", exc)
            finally:
                self._tell_background("shutdown", lambda b: b.shutdown(self, timeout))

    def close(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Finish for good (apps built and dropped in one process: tests, the reproduction harness): a
        clean shutdown, the writer's file closed, no more control polls; later requests pass through."""
        self.enabled = False
        POLLER.remove(self.control)
        try:
            self.shutdown(timeout)
        finally:
            self.writer.close(timeout)

    # -- the record (background thread) -----------------------------------------------------------
    def build_record(self, profile: RequestProfile) -> dict[str, Any]:
        """The ``sample`` record of a finished profile (background thread; see :mod:`memprof.sample`)."""
        return build_sample(profile, self.host, self.limit)


_RUNTIMES: list[weakref.ref[Runtime]] = []


def runtimes() -> list[Runtime]:
    """Every live runtime in this process, oldest first."""
    alive = [r for ref in _RUNTIMES if (r := ref()) is not None]
    if len(alive) != len(_RUNTIMES):
        _RUNTIMES[:] = [weakref.ref(r) for r in alive]
    return alive


def current_runtime() -> Runtime | None:
    """The most recently created live runtime, or None."""
    alive = runtimes()
    return alive[-1] if alive else None

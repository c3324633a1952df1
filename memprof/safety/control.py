"""Runtime control: the kill switch, mode overrides, and the status each worker publishes.

The poller, a job of memprof's background thread (:mod:`memprof.background`), visits every serving
runtime's :class:`Controller` about once a second. A tick reads the kill-switch file (``MEMPROF_KILL_SWITCH_FILE``, default ``DATA_DIR/DISABLED``),
the control file ``DATA_DIR/control.json`` written by ``memprof enable``, and, with ``MEMPROF_REDIS_URL``,
the Redis keys ``memprof:disable`` and ``memprof:mode`` (one round trip, short socket timeouts). It
caches the result on the controller, lets the guards' cooldowns run out, asks the runtime to recompute
its effective mode, and publishes the worker's status (``DATA_DIR/status/<host>-<pid>.json``,
and ``memprof:worker:<host>-<pid>`` in Redis) for ``memprof status``: every few seconds, at once when
the mode, the reason for a pause, the breaker or the overhead guard changed, and a last time at a clean
shutdown. The request path only reads the runtime's cached attributes. A failing tick or status write is
background work's failure (:func:`memprof.safety.isolation.background_step`): it never trips the breaker.

A runtime override can only narrow what the local settings allow: never above
``MEMPROF_CONTROL_MAX_MODE`` (default: ``MEMPROF_MODE``), never on when ``MEMPROF_ENABLED`` is false,
never targeted without a secret, and never longer than 24 h from when it was set, whatever wrote it
(:func:`memprof.safety.control_plane.bounded`). When Redis is unreachable the last values it gave stay in
force (a mode override only until its TTL runs out), so a disabled fleet stays disabled.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from typing import Any, Protocol

from memprof import events
from memprof import logs as log
from memprof.background import BACKGROUND, acquire
from memprof.safety.control_plane import (
    OFF,
    STATUS_TTL_S,
    Override,
    bounded,
    control_path,
    disable_key,
    mode_key,
    parse_override,
    read_control_file,
    redis_client,
    worker_key,
    write_status,
)
from memprof.safety.guards import MODE_RANK, CircuitBreaker, OverheadGuard, narrow, narrowest
from memprof.safety.isolation import background_step
from memprof.safety.redaction import redact_text
from memprof.settings import MemprofSettings, Mode
from memprof.workers import worker_id

STATUS_EVERY_S = 5.0
SAME_EXPIRY_S = 5.0  # a Redis key whose expiry moved later than this was set again


class Controlled(Protocol):
    """What a controller drives: the runtime's guards, its mode refresh and its status."""

    breaker: CircuitBreaker
    guard: OverheadGuard
    paused: str | None
    mode: Mode

    def refresh(self) -> None:
        """Recompute the mode in force."""

    def status(self) -> dict[str, Any]:
        """The worker's status as plain data."""


class Controller:
    """One runtime's view of the control plane, refreshed by the poller thread."""

    def __init__(self, settings: MemprofSettings, runtime: Controlled) -> None:
        self.settings = settings
        self.prefix = settings.redis_prefix
        self._runtime = weakref.ref(runtime)
        self.interval = settings.control_poll_interval_s
        # Cached results (read by resolve(); written only by the poller thread).
        self.kill_file = False
        self.file_override: Override | None = None
        self.redis_disable = False
        self.redis_override: Override | None = None
        self._redis_seen: tuple[str, float | None, float] | None = None  # mode, key expiry, first seen
        self.redis_ok: bool | None = None
        self.redis_error: str | None = None
        self.refused: str | None = None
        self.ticks = 0
        self._killed = False
        self._control_mtime: float | None = None
        self._redis: Any = None
        self._next_status = 0.0
        self._published: tuple[Any, ...] | None = None
        self._next_due = 0.0
        self._lock = threading.Lock()

    # -- the effective mode -----------------------------------------------------------------------
    def resolve(self, breaker_open: bool, guard_steps: int) -> tuple[Mode | None, str | None]:
        """The mode in force and, when nothing is profiled, why. Pure over the cached values."""
        settings = self.settings
        if not settings.enabled:
            return None, "disabled_by_settings"
        if self.kill_file:
            return None, "kill_switch_file"
        if self.redis_disable:
            return None, "redis_disable"
        if breaker_open:
            return None, "circuit_breaker"
        mode: Mode | None = settings.mode
        override = self.override()
        self.refused = None
        if override is not None:
            if override.mode == OFF:
                return None, f"override_off:{override.source}"
            wanted = Mode(override.mode)
            ceiling = settings.control_max_mode or settings.mode
            if MODE_RANK[wanted] > MODE_RANK[ceiling]:
                self.refused = f"{wanted.value} is above MEMPROF_CONTROL_MAX_MODE={ceiling.value}"
            if wanted is Mode.TARGETED and settings.targeted_secret is None:
                self.refused = "targeted needs MEMPROF_TARGETED_SECRET"
                return None, "override_targeted_without_secret"
            mode = narrowest(wanted, ceiling)
        mode = narrow(mode, guard_steps)
        if mode is None:
            return None, "overhead_guard"
        return mode, None

    def override(self, now: float | None = None) -> Override | None:
        """The narrowest live override (control file or Redis), if any."""
        now = time.time() if now is None else now
        live = [o for o in (self.file_override, self.redis_override) if o is not None and o.live(now)]
        if not live:
            return None
        return min(live, key=lambda o: -1 if o.mode == OFF else MODE_RANK[Mode(o.mode)])

    # -- one poll ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """Read every source, run the guards' clocks, refresh the runtime, publish status when due."""
        runtime = self._runtime()
        if runtime is None:
            return
        with self._lock:
            self.ticks += 1
            self._read_files()
            if self.settings.redis_url:
                self._read_redis()
            runtime.breaker.tick()
            runtime.guard.tick()
            killed = self.kill_file or self.redis_disable
            if killed and not self._killed:
                log.warning("memprof.kill_switch.on", file=self.kill_file, redis=self.redis_disable)
                events.guard_tripped("kill_switch")
            elif self._killed and not killed:
                log.info("memprof.kill_switch.off")
            self._killed = killed
            runtime.refresh()
            now = time.monotonic()
            state = _state(runtime)
            if now >= self._next_status or state != self._published:
                self._next_status = now + STATUS_EVERY_S
                self._published = state
                self.publish(runtime.status())

    def publish_final(self, timeout: float = 5.0) -> None:
        """Publish the status now (a clean shutdown: its counts are final). The lock (held by a tick, at
        most its short Redis timeouts) is waited for at most ``timeout`` seconds, then nothing is done."""
        runtime = self._runtime()
        if runtime is not None:
            if not acquire(self._lock, timeout, "the controller's lock at shutdown"):
                return
            try:
                self._published = _state(runtime)
                self.publish(runtime.status())
            finally:
                self._lock.release()

    def read_local(self) -> None:
        """Read the kill-switch and control files now (a stat and, when changed, a small read)."""
        with self._lock:
            self._read_files()

    def _read_files(self) -> None:
        self.kill_file = os.path.exists(self.settings.effective_kill_switch_file)
        path = control_path(self.settings.data_dir)
        try:
            mtime: float | None = path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        override = None
        if mtime is not None:
            try:
                override = read_control_file(path, mtime)
            except (OSError, ValueError):
                override = None  # being rewritten, or broken: the next tick reads it again
                self._control_mtime = None
        self.file_override = override

    def _read_redis(self) -> None:
        try:
            if self._redis is None:
                self._redis = redis_client(str(self.settings.redis_url))
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(disable_key(self.prefix))
            pipe.get(mode_key(self.prefix))
            pipe.pttl(mode_key(self.prefix))
            disable, mode, pttl = pipe.execute()
        except Exception as exc:  # any client or network failure: keep the last known values
            if self.redis_ok is not False:
                log.warning("memprof.control.redis_unreachable", error=type(exc).__name__)
            self.redis_ok = False
            self.redis_error = type(exc).__name__
            now = time.time()
            if self.redis_override is not None and not self.redis_override.live(now):
                self.redis_override = None
            return
        if self.redis_ok is False:
            log.info("memprof.control.redis_reachable")
        self.redis_ok, self.redis_error = True, None
        self.redis_disable = disable is not None and disable not in ("0", "false", "")
        until = time.time() + pttl / 1000 if isinstance(pttl, int) and pttl > 0 else None
        override = parse_override({"mode": mode, "until": until}, "redis") if mode else None
        self.redis_override = self._redis_window(override)

    def _redis_window(self, override: Override | None) -> Override | None:
        """A Redis key carries no time it was set: its window starts when this worker first sees its
        value, and again when it is set anew (another mode, or an expiry moved later); then
        :func:`bounded` applies (30 minutes for an aggressive key without TTL, 24 h at most)."""
        if override is None:
            self._redis_seen = None
            return None
        seen, now = self._redis_seen, time.time()
        same = (
            seen is not None
            and seen[0] == override.mode
            and (seen[1] is None) == (override.until is None)
            and (override.until is None or seen[1] is None or override.until <= seen[1] + SAME_EXPIRY_S)
        )
        if not same or seen is None:
            seen = self._redis_seen = (override.mode, override.until, now)
        return bounded(override, seen[2])

    # -- status -----------------------------------------------------------------------------------
    def publish(self, status: dict[str, Any]) -> None:
        """Write this worker's status file (and Redis key); a failure is the ``status_publish`` step's."""
        text = json.dumps(status, default=str, separators=(",", ":"))
        wid = worker_id()
        background_step("status_publish", write_status, self.settings.data_dir, wid, text, backoff=False)
        if self.settings.redis_url and self._redis is not None and self.redis_ok:
            try:
                self._redis.set(worker_key(self.prefix, wid), text, ex=STATUS_TTL_S)
            except Exception:
                self.redis_ok = False

    def status(self) -> dict[str, Any]:
        """The control part of the worker status."""
        override = self.override()
        url = self.settings.redis_url
        return {
            "kill_switch_file": str(self.settings.effective_kill_switch_file),
            "kill_switch_active": self.kill_file or self.redis_disable,
            "override": None if override is None else vars(override),
            "override_refused": self.refused,
            "redis": None
            if not url
            else {"url": redact_text(url), "ok": self.redis_ok, "error": self.redis_error},
            "ticks": self.ticks,
        }

    def reinit_after_fork(self) -> None:
        """A forked child: new lock, new Redis client, status under the child's pid at once."""
        self._lock = threading.Lock()
        self._redis = None
        self._next_status = 0.0
        self._published = None
        self._next_due = 0.0


def _state(runtime: Controlled) -> tuple[Any, ...]:
    """What ``memprof status`` must show as soon as it changes: published at the next tick, not in 5 s."""
    return (runtime.paused, runtime.mode, runtime.breaker.state, runtime.guard.steps)


class _Poller:
    """The process's control poller: a job of the background thread that visits every live controller
    when it is due."""

    def __init__(self) -> None:
        self.controllers: weakref.WeakSet[Controller] = weakref.WeakSet()

    def add(self, controller: Controller) -> None:
        """Visit ``controller`` from now on (its runtime serves)."""
        self.controllers.add(controller)
        BACKGROUND.add(self)

    def remove(self, controller: Controller) -> None:
        """Stop visiting ``controller`` (its runtime was closed)."""
        self.controllers.discard(controller)

    def due(self) -> float | None:
        """When the next controller is due (see :class:`memprof.background.Job`); None: none left."""
        dues = [c._next_due for c in list(self.controllers)]
        return min(dues) if dues else None

    def run(self) -> None:
        """Tick every controller that is due."""
        self._visit_due()

    def _visit_due(self) -> None:
        """Its own frame, so that no controller stays referenced by a loop variable while the thread
        sleeps (a dead runtime's controller must be collectable)."""
        now = time.monotonic()
        # Weak references, resolved one at a time: a list of the controllers themselves would keep every
        # one alive while the slowest ticks (a dead runtime's controller outliving a gc.collect()).
        for ref in [weakref.ref(c) for c in self.controllers]:
            controller = ref()
            if controller is None:
                continue
            if now >= controller._next_due:
                controller._next_due = now + controller.interval
                background_step("control_poll", controller.tick, backoff=False)
            controller = None

    def reinit_after_fork(self) -> None:
        """A forked child: fresh controllers' locks and clients; a runtime that serves there adds its
        controller again (memprof.runtime.Runtime.start)."""
        for controller in list(self.controllers):
            controller.reinit_after_fork()
        self.controllers = weakref.WeakSet()


POLLER = _Poller()


def poll_now() -> None:
    """Make the poller visit every controller, and publish its status, at once (tests, and right after
    a CLI change)."""
    for controller in list(POLLER.controllers):
        controller._next_due = controller._next_status = 0.0
    BACKGROUND.wake()

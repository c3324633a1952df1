"""``MemprofMiddleware``: a pure ASGI middleware that profiles requests' memory.

Use ``app = MemprofMiddleware(app)`` or ``app.add_middleware(MemprofMiddleware)``. Building it starts
nothing: memprof starts serving at the first call in the process that serves (:mod:`memprof.lifecycle`).
Non-HTTP scopes pass straight through (lifespan is watched only to shut down cleanly). The response, its streaming,
the app's exceptions and background tasks are exactly what they would be without memprof: every
memprof step is guarded, and the app's exception is re-raised with a bare ``raise``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from memprof import (
    forksafe,  # noqa: F401  (registers the fork hooks)
    logs,
)
from memprof.background import timed_out
from memprof.integrations import sessions
from memprof.lifecycle import request_ended_while_stopping, serve
from memprof.profile import RequestProfile, _current
from memprof.runtime import RESPONSE_END_HOOKS, SHUTDOWN_TIMEOUT_S, Runtime
from memprof.safety.isolation import internal_error
from memprof.settings import MemprofConfigError, MemprofSettings, Mode, load_settings
from memprof.watchdog.thread import WATCHDOG

logger = logging.getLogger("memprof")
_reported: set[str] = set()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def report_off(reason: str) -> None:
    """Say once per process and reason, at ERROR, that memprof is off and the app runs without it."""
    if reason in _reported:
        return
    _reported.add(reason)
    logger.error("memprof is off, the app runs without it: %s (check with: memprof check)", reason)


class MemprofMiddleware:
    """Profile the memory of HTTP requests to ``app``. Settings default to ``MEMPROF_*`` variables.

    A bad ``MEMPROF_*`` setting never breaks the app: memprof is then off (requests pass straight
    through) and says so once, at ERROR on the ``memprof`` logger, naming the variable and what it accepts
    (``memprof check`` validates the settings in a deploy pipeline). Once running, memprof never raises
    into the app.

    This is the composition root: it builds the runtime and wires the watchdog (dumps, flight recorder,
    cache state), the session integration and the after-fork resets (:mod:`memprof.forksafe`).
    """

    def __init__(self, app: ASGIApp, *, settings: MemprofSettings | None = None) -> None:
        self.app = app
        self.settings: MemprofSettings | None = None
        self.runtime: Runtime | None = None
        self._serving = False  # set by serving_starts(), at lifespan start-up or the first request
        try:
            self.settings = settings if settings is not None else load_settings()
            sessions.install()
            self.runtime = Runtime(self.settings, background=WATCHDOG)
            instrument_sqlalchemy_if_used(self.settings)
        except MemprofConfigError as exc:
            report_off(str(exc))
        except Exception as exc:  # memprof's own failure must never take the app down
            internal_error("start", exc)
            report_off(f"it could not start ({type(exc).__name__})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        if runtime is not None and not runtime.serving and runtime.enabled:
            serve(runtime)  # the first call in this process: a request or the lifespan start-up
        if scope["type"] != "http" or runtime is None:
            if scope["type"] == "lifespan" and runtime is not None:
                await self.app(scope, receive, self._lifespan_send(runtime, send))
            else:
                await self.app(scope, receive, send)
            return
        if not self._serving:
            self.serving_starts(runtime)
        if not runtime.enabled or "memprof" in scope:
            # Off, or a second memprof inside the same request: pass through.
            await self.app(scope, receive, send)
            return
        try:
            full = runtime.decide(scope)
        except Exception as exc:
            internal_error("sampling", exc)
            full = None
        runtime.inflight += 1
        try:
            if runtime.active:
                runtime.note_request_started()
            if full is None:
                scope["memprof"] = None
                # Named in dumps and the flight recorder while in flight (the OOM culprit is most often
                # an unsampled request): a dict entry, no reading, no record.
                unprofiled, key = runtime.unprofiled, id(scope)
                unprofiled[key] = (time.time(), scope)
                try:
                    await self.app(scope, receive, send)
                finally:
                    unprofiled.pop(key, None)  # (a forked child starts with none)
            else:
                await self._profiled(runtime, full, scope, receive, send)
        except MemoryError:
            runtime.memory_error(scope)  # guarded; the error goes on unchanged
            raise
        finally:
            runtime.inflight -= 1
            if runtime.stopping:  # a stop signal came: the background thread shuts down once idle
                request_ended_while_stopping()

    async def _profiled(
        self, runtime: Runtime, full: bool, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            profile: RequestProfile | None = runtime.begin(scope, full)
        except Exception as exc:
            internal_error("begin", exc)
            profile = None
        if profile is None:
            scope["memprof"] = None
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            try:
                kind = message["type"]
                if kind == "http.response.start":
                    profile.status = message.get("status")
                    profile.add_checkpoint("response_start")
                elif kind == "http.response.body" and not message.get("more_body", False):
                    profile.add_checkpoint("response_end")
                    if RESPONSE_END_HOOKS:
                        runtime.response_end(profile, scope)
            except Exception as exc:
                internal_error("send", exc)
            await send(message)

        scope["memprof"] = profile
        token = _current.set(profile)
        # Nothing of the app ran since request_start's readings: app_start shares them (reads saved).
        profile.checkpoints.append(
            (
                "app_start",
                time.perf_counter_ns() - profile.start_ns,
                profile.rss_start,
                profile.heap_start,
                None,
            )
        )
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            profile.error = type(exc).__name__
            raise
        finally:
            _current.reset(token)
            try:
                runtime.end(profile, scope)
            except Exception as exc:
                internal_error("end", exc)

    def close(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop profiling for good and release memprof's threads and files for this app: records written
        out, the flight-recorder file removed, the samples file closed; requests pass straight through.

        A server's lifespan shutdown already writes everything out: ``close`` is for apps built and
        dropped within one process (tests, scripts). Idempotent.
        """
        if self.runtime is not None:
            self.runtime.close(timeout)

    def serving_starts(self, runtime: Runtime) -> None:
        """Once, at lifespan start-up or the first request: instrument SQLAlchemy if the app imported it
        since, and say once per process that memprof runs (guarded)."""
        self._serving = True
        try:
            instrument_sqlalchemy_if_used(runtime.settings)
            announce(runtime)
        except Exception as exc:
            internal_error("serving_starts", exc)

    def _lifespan_send(self, runtime: Runtime, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message.get("type") == "lifespan.startup.complete" and not self._serving:
                self.serving_starts(runtime)
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._shutdown(runtime)
            await send(message)

        return lifespan_send

    async def _shutdown(self, runtime: Runtime) -> None:
        """The lifespan shutdown, off the event loop; if no worker thread finishes it in time, what
        remains is done here without waiting (the flight file must go: a clean stop is not a crash)."""
        try:
            import anyio
            import anyio.to_thread

            run: Any = anyio.to_thread.run_sync
            # anyio < 4.1 names it ``cancellable``: the thread is abandoned, not waited for.
            abandon = (
                "abandon_on_cancel"
                if "abandon_on_cancel" in inspect.signature(run).parameters
                else "cancellable"
            )
            with anyio.move_on_after(SHUTDOWN_TIMEOUT_S + 1.0) as waited:
                await run(runtime.shutdown, **{abandon: True})
            if waited.cancelled_caught:
                timed_out("the lifespan shutdown")
                runtime.shutdown(0.0)
        except Exception as exc:
            internal_error("lifespan_flush", exc)


def instrument_sqlalchemy_if_used(settings: MemprofSettings) -> None:
    """``MEMPROF_SQLALCHEMY=auto``: instrument every engine, present and future, when the app has
    imported SQLAlchemy (never importing it for an app that does not use it). Options given to an
    explicit ``instrument_sqlalchemy()`` call stay in force."""
    if not settings.enabled:
        return
    try:
        if settings.sqlalchemy == "auto" and "sqlalchemy" in sys.modules:
            from memprof.integrations.sqlalchemy import instrument_sqlalchemy, is_instrumented

            if not is_instrumented():
                instrument_sqlalchemy()
        every_request_full = settings.mode is Mode.AGGRESSIVE and settings.effective_sample_rate >= 1.0
        if every_request_full and "memprof.integrations.sqlalchemy" in sys.modules:
            from memprof.integrations.sqlalchemy import count_everywhere

            count_everywhere()  # one Mapper listener rather than one per Session
    except Exception as exc:  # an SQLAlchemy memprof cannot instrument must not stop the app
        internal_error("sqlalchemy_auto", exc)


_announced_pid: int | None = None


def announce(runtime: Runtime) -> None:
    """The start-up line, once per process (INFO, logger ``memprof``): mode, sample rate, data dir and
    what of SQLAlchemy is instrumented."""
    global _announced_pid
    if _announced_pid == os.getpid():
        return
    _announced_pid = os.getpid()
    settings = runtime.settings
    if not runtime.enabled:
        mode = "off (MEMPROF_ENABLED=false)"
    else:
        mode = runtime.mode.value if runtime.paused is None else f"off ({runtime.paused})"
    data_dir = os.path.abspath(settings.data_dir)
    sqlalchemy = sqlalchemy_state(settings)
    text = f"{mode} mode, sample rate {runtime.sample_rate:g}, data dir {data_dir}, SQLAlchemy {sqlalchemy}"
    logs.info(
        "memprof.started",
        text=text,
        mode=mode,
        sample_rate=runtime.sample_rate,
        data_dir=data_dir,
        sqlalchemy=sqlalchemy,
    )


def sqlalchemy_state(settings: MemprofSettings) -> str:
    """What of SQLAlchemy is instrumented, in words (never imports it)."""
    if "memprof.integrations.sqlalchemy" in sys.modules:
        from memprof.integrations.sqlalchemy import describe

        instrumented = describe()
        if instrumented != "no engine":
            return f"instrumented ({instrumented})"
    if "sqlalchemy" not in sys.modules:
        return "not instrumented (not imported by the app)"
    if settings.sqlalchemy == "off":
        return "not instrumented (MEMPROF_SQLALCHEMY=off)"
    return "not instrumented"

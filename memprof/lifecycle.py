"""When memprof runs in a process: from the first request or lifespan start-up to a clean stop.

Building the middleware starts nothing: importing the app in a gunicorn ``--preload`` master, a CLI or a
test that only builds it leaves no thread, file or status behind. :func:`serve` (the middleware calls it
on the first ASGI call of an enabled runtime in a process, lifespan included) starts the runtime there:
control polling and status, the watchdog with its flight file and state lines, the background thread.

A clean stop is recognised however the server ends the process, so that no clean stop ever looks like a
crash (a flight file left behind):

- lifespan shutdown (uvicorn, hypercorn, gunicorn's uvicorn worker): the middleware shuts the runtime down;
- a stop signal (SIGTERM, SIGINT) that the server handles (a Python handler is installed when memprof
  starts): memprof chains its own handler before it, which only raises a flag. The background thread
  then shuts each runtime down as soon as it has no request in flight; a request ending meanwhile wakes
  it. This covers ``uvicorn --lifespan off``, whose process re-raises the signal after its graceful
  shutdown and so never runs ``atexit``. A request arriving after that starts serving again;
- a normal interpreter exit: ``atexit``.

A shutdown writes the records out, then the final cache state, and removes the flight file last, even
when a step before it failed; every wait in it is bounded (:data:`SHUTDOWN_TIMEOUT_S`), and a wait that
runs out is logged once and skipped.
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from types import FrameType
from typing import Any

from memprof.background import BACKGROUND
from memprof.runtime import SHUTDOWN_TIMEOUT_S, Runtime, runtimes
from memprof.safety.isolation import internal_error

STOP_SIGNALS = ("SIGTERM", "SIGINT")
STOP_POLL_S = 0.05  # how soon the background thread sees a stop signal
EXIT_TIMEOUT_S = 3.0  # what the atexit shutdown may wait, in all

_lock = threading.Lock()
_stop_requested: float | None = None  # time.monotonic() of the stop signal


def serve(runtime: Runtime) -> None:
    """Start ``runtime`` in this process (idempotent; guarded: never raises into the app)."""
    global _stop_requested
    try:
        with _lock:
            if runtime.serving:
                return
            _stop_requested = None
            runtime.start()
        install_stop_signals()
        BACKGROUND.add(STOP_WATCH)
    except Exception as exc:
        internal_error("serve", exc)


def install_stop_signals() -> None:
    """Chain memprof's flag before the server's own handler of each stop signal (main thread only).

    Nothing is installed for a signal without a Python handler: the default action kills at once and
    memprof must not delay it, and an ignored signal stops nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous = signal.getsignal(signum)
        if not callable(previous) or getattr(previous, "_memprof_stop", False):
            continue
        signal.signal(signum, _chained(previous))


def _chained(previous: Any) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        # A signal handler: a flag and nothing else (no lock: the main thread may hold it).
        global _stop_requested
        if _stop_requested is None:
            _stop_requested = time.monotonic()
        previous(signum, frame)

    handler._memprof_stop = True  # type: ignore[attr-defined]
    return handler


def stop_requested() -> bool:
    """Whether a stop signal came since this process last started serving."""
    return _stop_requested is not None


def request_ended_while_stopping() -> None:
    """Called by the middleware as a request ends after a stop signal: the stop watch looks at once."""
    BACKGROUND.wake()


class _StopWatch:
    """The background job that shuts runtimes down after a stop signal, as soon as they are idle."""

    def __init__(self) -> None:
        self.next = 0.0

    def due(self) -> float | None:
        """Every STOP_POLL_S while a runtime serves (a signal handler cannot wake the thread)."""
        return self.next if _serving() else None

    def run(self) -> None:
        """After a stop signal: shut down every serving runtime with no request in flight."""
        self.next = time.monotonic() + STOP_POLL_S
        if _stop_requested is None:
            return
        for runtime in _serving():
            runtime.stopping = True
            if runtime.inflight <= 0:
                runtime.shutdown(SHUTDOWN_TIMEOUT_S)


STOP_WATCH = _StopWatch()


def _serving() -> list[Runtime]:
    return [rt for rt in runtimes() if rt.serving]


def at_exit() -> None:
    """Interpreter exit: every runtime serving in this process shuts down cleanly (bounded in all)."""
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    for runtime in _serving():
        try:
            runtime.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:  # an exit must go on whatever memprof does
            pass


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): a fresh lock, and no stop asked for (the signal
    handlers themselves are inherited, as the server's are)."""
    global _lock, _stop_requested
    _lock = threading.Lock()
    _stop_requested = None


atexit.register(at_exit)

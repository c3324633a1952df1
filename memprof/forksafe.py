"""Fork safety: what a fork does to memprof, in one place (gunicorn prefork workers, multiprocessing).

``os.fork()`` copies memory but only the calling thread: memprof's background thread is gone in the
child, a lock another thread held stays locked forever there, and inherited descriptors still point at
the parent's files. Two defences, both registered with ``os.register_at_fork`` when this module is
imported by the composition root (:mod:`memprof.middleware`):

- before the fork, the forking thread waits (at most ``memprof.background.FORK_WAIT_S``) until the
  background thread finishes the job it is running and keeps it from starting another until the fork
  is done (:meth:`memprof.background.Background.before_fork`): no job of memprof's is ever half done in
  the copy, and no lock of another library it uses (logging's, a Redis pool's) is held by it;
- in the child, :func:`after_fork_in_child` re-creates every lock memprof has, in the order of
  :data:`RESETS`, whoever held it: the background thread past its wait, or an app thread inside
  memprof's request path (a guard, the token verifier, the error counter). The child then serves
  nothing of memprof's until it serves requests itself (:mod:`memprof.lifecycle`): its thread, flight
  file, state lines and status start then, under its own pid.

The SQLAlchemy integration's two locks (instrumenting, the count of SQL outside requests) are taken
only by the app's own threads; the integration re-creates them with its own at-fork hook, so that this
module never imports SQLAlchemy for an app that does not use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from memprof import background, heap, heap_peak, lifecycle, memory, profile, runtime, writer
from memprof.safety import control, isolation
from memprof.watchdog import dump, state
from memprof.watchdog.thread import WATCHDOG


def _writers() -> None:
    for w in writer.writers():
        w.reinit_after_fork()


def _runtimes() -> None:
    for rt in runtime.runtimes():
        rt.reinit_after_fork()


# In order: the background thread's state first (nothing may wait for the parent's thread), then what
# later steps rely on (readings, ids, error counting), then each owner of locks.
RESETS: list[tuple[str, Callable[[], None]]] = [
    # the gate, the jobs' lock, the wake-up event; no thread, no job
    ("background", background.BACKGROUND.after_fork_in_child),
    # the statm descriptor (the inherited one reads the parent's RSS) and its lock
    ("memory", memory.reinit_after_fork),
    # the last heap reading and the collection hook
    ("heap", heap.reinit_after_fork),
    ("heap_peak", heap_peak.reinit_after_fork),
    ("request_ids", profile.reinit_after_fork),
    # the lock of the internal-error counter
    ("internal_errors", isolation.errors.reinit_after_fork),
    # each writer: its lock and idle condition, a fresh queue, its own file (the parent's descriptor closed)
    ("writers", _writers),
    # the one-dump-at-a-time lock
    ("dump_lock", dump.reinit_after_fork),
    # the state providers' lock, the cache registry's lock (the scan starts over)
    ("state", state.reinit_after_fork),
    # each runtime: the refresh lock, the breaker's, the overhead guard's and the token verifier's locks;
    # not serving, nothing in flight
    ("runtimes", _runtimes),
    # each controller's lock and Redis client; the poller's controllers (added again when serving)
    ("control", control.POLLER.reinit_after_fork),
    # the watchdog's lock, its runtimes, groups (flight files) and pending dumps
    ("watchdog", WATCHDOG.after_fork),
    # the serving lock; no stop signal received
    ("lifecycle", lifecycle.reinit_after_fork),
]


def before_fork() -> None:
    """In the forking thread, before the fork: no memprof job runs past this (bounded wait)."""
    try:
        background.BACKGROUND.before_fork()
    except Exception:  # a fork must happen whatever memprof does
        pass


def after_fork_in_parent() -> None:
    """In the parent, after the fork: the background thread goes on."""
    try:
        background.BACKGROUND.after_fork_in_parent()
    except Exception:
        pass


def after_fork_in_child() -> None:
    """Run every reset in a forked child; one failing never stops the others, and nothing raises."""
    for _name, reset in RESETS:
        try:
            reset()
        except Exception:  # a child must start even if memprof cannot
            pass


os.register_at_fork(
    before=before_fork, after_in_parent=after_fork_in_parent, after_in_child=after_fork_in_child
)

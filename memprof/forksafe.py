"""Fork safety: the one ordered list of what a forked child (a gunicorn prefork worker) must reset.

``os.fork()`` copies memory but only the calling thread: memprof's threads are gone, a lock another thread
held stays locked forever, and inherited descriptors still point at the parent's files. :func:`after_fork_in_child`
runs in every forked child (``os.register_at_fork``, registered when this module is imported by the
composition root, :mod:`memprof.middleware`) and resets, in order: the memory readings (the statm
descriptor), the last heap reading and the collection hook, request ids, the internal-error counter, the writers (their own samples files), the dump
lock, every runtime's locks, the control thread, and the watchdog thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from memprof import heap, heap_peak, memory, profile, runtime, writer
from memprof.safety import control, isolation
from memprof.watchdog import dump
from memprof.watchdog.thread import WATCHDOG


def _writers() -> None:
    for w in writer.writers():
        w.reinit_after_fork()


def _runtimes() -> None:
    for rt in runtime.runtimes():
        rt.reinit_after_fork()


# In order: what later steps rely on (readings, ids, error counting) comes first.
RESETS: list[tuple[str, Callable[[], None]]] = [
    ("memory", memory.reinit_after_fork),
    ("heap", heap.reinit_after_fork),
    ("heap_peak", heap_peak.reinit_after_fork),
    ("request_ids", profile.reinit_after_fork),
    ("internal_errors", isolation.errors.reinit_after_fork),
    ("writers", _writers),
    ("dump_lock", dump.reinit_after_fork),
    ("runtimes", _runtimes),
    ("control", control.POLLER.reinit_after_fork),
    ("watchdog", WATCHDOG.after_fork),
]


def after_fork_in_child() -> None:
    """Run every reset in a forked child; one failing never stops the others, and nothing raises."""
    for _name, reset in RESETS:
        try:
            reset()
        except Exception:  # a child must start even if memprof cannot
            pass


os.register_at_fork(after_in_child=after_fork_in_child)

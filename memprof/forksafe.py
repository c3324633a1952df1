"""Fork safety: what a child process (a gunicorn prefork worker) must not inherit from its parent.

``os.fork()`` copies memory but only the calling thread: the writer and control threads are gone, any
lock another thread held stays locked forever, and inherited descriptors still point at the parent's
files. :func:`after_fork_in_child` runs in every forked child (``os.register_at_fork``) and gives each
memprof object fresh locks, a fresh writer (its own samples file, under the child's pid), a fresh Redis
client, and restarts the control thread. The RSS descriptor is reopened by :mod:`memprof.memory`.
"""

from __future__ import annotations

import os
import threading


def _silence_inherited_file(fd: int) -> None:
    # The child's copy of the parent's samples file may hold buffered lines: pointing the child's
    # descriptor at /dev/null makes the eventual flush of that copy harmless (no duplicated lines).
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def after_fork_in_child() -> None:
    """Re-create threads, locks, descriptors and clients in a forked child. Never raises."""
    from memprof import control, isolation, runtime, writer

    isolation.errors.reinit_after_fork()
    for w in list(writer._WRITERS):
        try:
            if w._file is not None:
                _silence_inherited_file(w._file.fileno())
            w._lock = threading.Lock()
            w._reset()
        except Exception:
            pass
    for rt in runtime.runtimes():
        try:
            rt.reinit_after_fork()
        except Exception:
            pass
    try:
        control.POLLER.reinit_after_fork()
    except Exception:
        pass


def _guarded() -> None:
    try:
        after_fork_in_child()
    except Exception:  # pragma: no cover - a child must start even if memprof cannot
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_guarded)

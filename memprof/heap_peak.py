"""Heap readings between checkpoints: at the garbage collections of a profiled request.

A request's heap peak is often between two of memprof's readings: an endpoint builds 20,000 ORM objects
after its query's last row was fetched, turns them into a response and frees them all before
``response_start``. Building objects is what starts collections (every 700 new containers, CPython's
default), so while a profiled request is in flight a ``gc.callbacks`` hook reads the heap at the start of
each collection that happens in a profiled request's context (the allocating task or thread) and raises
that request's ``heap_peak``. Readings share a recent one (see :mod:`memprof.heap`), so a burst of
collections costs one reading per window.

The hook is in ``gc.callbacks`` only while a profiled request is in flight in this process: with none
(an unsampled request alone), the garbage collector runs exactly as without memprof. A collection during
an unsampled request that overlaps a profiled one costs one context-variable read more.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from memprof.heap import heap_at
from memprof.profile import _current
from memprof.safety.isolation import internal_error

_perf = time.perf_counter_ns
_callbacks = gc.callbacks
_lock = threading.Lock()
_in_flight = 0


def _at_collection(phase: str, info: dict[str, Any]) -> None:
    if phase != "start":
        return
    profile = _current.get()
    if profile is None or profile.finished:
        return
    try:
        t0 = _perf()
        heap = heap_at(t0)
        if heap > profile.heap_peak:
            profile.heap_peak = heap
        profile.overhead_ns += _perf() - t0
    except Exception as exc:
        internal_error("heap_at_collection", exc)


def started() -> None:
    """A profiled request started: the hook is installed with the first in flight."""
    global _in_flight
    _lock.acquire()  # not ``with``: half the cost, on the sampled request path
    try:
        _in_flight += 1
        if _in_flight == 1:
            _callbacks.append(_at_collection)
    finally:
        _lock.release()


def ended() -> None:
    """A profiled request ended: the hook is removed with the last in flight."""
    global _in_flight
    _lock.acquire()
    try:
        if _in_flight > 0:
            _in_flight -= 1
            if _in_flight == 0 and _at_collection in _callbacks:  # (unless the app emptied the list)
                _callbacks.remove(_at_collection)
    finally:
        _lock.release()


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): the parent's requests in flight are not the
    child's: start from none, with a lock nobody holds and no collection hook."""
    global _lock, _in_flight
    _lock = threading.Lock()
    _in_flight = 0
    while _at_collection in _callbacks:
        _callbacks.remove(_at_collection)

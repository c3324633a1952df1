"""The parts of a critical dump, each a pure-ish reading of the process: objects, modules, stacks, gc.

Every collector is bounded (top N, frames per stack) and returns plain JSON-ready data: names,
numbers and ``file:line in func`` frames, never the objects themselves or local variables. They run
on the background thread (or in the caller of :func:`memprof.dump`), never on a per-request path.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections import Counter
from types import FrameType
from typing import Any

TOP_TYPES = 50
TOP_MODULES = 30
MAX_FRAMES = 60
MAX_TASKS = 200
TOP_TRACEMALLOC = 25


def object_counts(top: int = TOP_TYPES) -> dict[str, Any]:
    """Objects tracked by the garbage collector, counted by type (the ``top`` most numerous).

    One pass over ``gc.get_objects()``: the list costs 8 bytes per object and is dropped at once.
    Strings, numbers and bytes are not gc-tracked; they show in the containers holding them.
    """
    objects = gc.get_objects()
    try:
        counts = Counter(map(type, objects))
        total = len(objects)
    finally:
        del objects
    return {
        "total": total,
        "types": len(counts),
        "top": [{"type": _type_name(t), "count": n} for t, n in counts.most_common(top)],
    }


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", None) or "?"
    name = str(getattr(t, "__qualname__", None) or getattr(t, "__name__", "?"))
    return name if module == "builtins" else f"{module}.{name}"


def modules(top: int = TOP_MODULES) -> dict[str, Any]:
    """Loaded modules: how many, and the largest by source file size."""
    sizes: list[tuple[int, str]] = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        try:
            sizes.append((os.stat(file).st_size, name))
        except OSError:
            continue
    sizes.sort(reverse=True)
    return {
        "count": len(sys.modules),
        "largest": [{"name": name, "file_bytes": size} for size, name in sizes[:top]],
    }


def _frames(frame: FrameType | None, limit: int = MAX_FRAMES) -> list[str]:
    """``file:line in func`` from the outermost to the innermost frame (the innermost ``limit`` kept)."""
    out: list[str] = []
    while frame is not None and len(out) < limit:
        code = frame.f_code
        out.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    out.reverse()
    return out


def _current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()`` with the garbage collector paused: on CPython 3.11 it allocates frame
    objects while holding the runtime's thread-list lock, and a collection run then (its finalizers)
    can deadlock against a thread that is exiting (python/cpython#106883; seen here as a hung dump)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


def thread_stacks() -> list[dict[str, Any]]:
    """The stack of every thread (no local variables), the current thread marked; memprof's own
    background threads (``memprof-*``) are left out: they are in every dump and say nothing of the app."""
    names = {t.ident: t for t in threading.enumerate()}
    me = threading.get_ident()
    out = []
    for ident, frame in _current_frames().items():
        thread = names.get(ident)
        if thread is not None and thread.name.startswith("memprof-"):
            continue
        out.append(
            {
                "name": thread.name if thread is not None else f"thread-{ident}",
                "ident": ident,
                "daemon": thread.daemon if thread is not None else None,
                "current": ident == me,
                "stack": _frames(frame),
            }
        )
        del frame
    return out


def task_stacks(loop: asyncio.AbstractEventLoop | None) -> list[dict[str, Any]]:
    """The pending asyncio tasks of ``loop`` with their coroutine stacks (no local variables).

    Read from another thread: ``asyncio.all_tasks`` retries when the task set changes under it, and a
    task that finishes meanwhile is simply reported as it was seen.
    """
    if loop is None or loop.is_closed():
        return []
    out = []
    for task in list(asyncio.all_tasks(loop))[:MAX_TASKS]:
        try:
            coro = task.get_coro()
            stack = _await_chain(coro)
            out.append(
                {
                    "name": task.get_name(),
                    "coro": getattr(coro, "__qualname__", type(coro).__name__),
                    "done": task.done(),
                    "stack": stack,
                }
            )
        except RuntimeError:  # the task changed state while it was read
            continue
    return out


def _await_chain(coro: Any, limit: int = MAX_FRAMES) -> list[str]:
    """The frames of a suspended coroutine and of everything it awaits, outermost first.

    ``Task.get_stack`` gives only the task's own coroutine frame; following ``cr_await`` (and the
    generator and async generator equivalents) reaches the frame that is actually waiting.
    """
    out: list[str] = []
    while coro is not None and len(out) < limit:
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return out


def gc_stats() -> dict[str, Any]:
    """Garbage-collector counters: generation counts and thresholds, per-generation stats, garbage."""
    return {
        "enabled": gc.isenabled(),
        "counts": list(gc.get_count()),
        "thresholds": list(gc.get_threshold()),
        "generations": gc.get_stats(),
        "garbage": len(gc.garbage),
        "frozen": gc.get_freeze_count(),
    }


def tracemalloc_top(top: int = TOP_TRACEMALLOC) -> dict[str, Any] | None:
    """Top allocation sites, only when tracing is on (a snapshot of a big heap costs seconds)."""
    if not tracemalloc.is_tracing():
        return None
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("lineno")[:top]
    del snapshot
    sites = []
    for stat in stats:
        frame = stat.traceback[0]
        sites.append({"site": f"{frame.filename}:{frame.lineno}", "size": stat.size, "count": stat.count})
    return {"traced": current, "traced_peak": peak, "top": sites}

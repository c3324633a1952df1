"""Measurements behind the markers: traced allocation peak, and memory/object growth over iterations.

Python allocations are measured with :mod:`tracemalloc` (started with one frame when not already on,
stopped again afterwards): unlike RSS it is exact, per process, unaffected by the allocator keeping
freed pages, and its peak can be reset at the start of a test.
"""

from __future__ import annotations

import gc
import linecache
import sys
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from memprof._units import format_size
from memprof.testing.fit import Fit, growth_per_step, keeps_growing, robust_growth

_IGNORED_FILES = (
    __file__,
    tracemalloc.__file__,
    linecache.__file__,
    "<frozen importlib._bootstrap>",
    "<unknown>",
)


class Traced:
    """Python memory traced since :meth:`start`: ``current`` and ``peak`` above the start, in bytes."""

    def __init__(self) -> None:
        self.base = 0
        self.started_here = False

    def start(self) -> None:
        """Start tracing if needed, and make the current traced size the zero of the peak."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self.started_here = True
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]

    def reset_peak(self) -> None:
        """Forget the peak so far (the next peak is measured from now, still above ``base``)."""
        tracemalloc.reset_peak()

    @property
    def current(self) -> int:
        """Traced bytes above the start."""
        return tracemalloc.get_traced_memory()[0] - self.base

    @property
    def peak(self) -> int:
        """Highest traced bytes above the start since the last reset."""
        return tracemalloc.get_traced_memory()[1] - self.base

    def top_sites(self, limit: int) -> list[tuple[str, int, int]]:
        """The ``limit`` source lines holding the most traced memory now: (file:line, bytes, blocks)."""
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, name) for name in _IGNORED_FILES]
        )
        out = []
        for stat in snapshot.statistics("lineno")[:limit]:
            frame = stat.traceback[0]
            out.append((f"{frame.filename}:{frame.lineno}", stat.size, stat.count))
        return out

    def current_excluding(self, patterns: Sequence[str]) -> int:
        """Traced bytes now, leaving out allocations made in files matching ``patterns`` (fnmatch).

        With one frame of traceback an allocation belongs to the file of the innermost Python frame,
        so excluding the test client's libraries leaves what the app allocated. Not relative to the
        start: compare two readings.
        """
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, p) for p in patterns])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    def stop(self) -> None:
        """Stop tracing if :meth:`start` started it."""
        if self.started_here:
            tracemalloc.stop()
            self.started_here = False


def client_files() -> list[str]:
    """Patterns of files whose allocations belong to the measuring, not to the code measured: httpx
    (and its cookie jar, and the ``re`` caches its URL parsing fills), Starlette's test client, anyio's
    portal, and memprof itself (with the fnmatch cache of these very patterns)."""
    import fnmatch
    import http.cookiejar
    import os.path
    import re

    out = [
        os.path.join(os.path.dirname(re.__file__), "*"),
        str(fnmatch.__file__),
        str(tracemalloc.__file__),
        str(http.cookiejar.__file__),
        # memprof itself: its background thread, its integrations' collectors. What the
        # profiler allocates is not the app's memory (and other runtimes' threads would add noise).
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "*"),
    ]
    for name, whole in (("httpx", True), ("anyio", True), ("starlette.testclient", False)):
        module = sys.modules.get(name)  # a module not loaded allocates nothing (and stays unloaded)
        if module is None or getattr(module, "__file__", None) is None:
            continue
        path = str(module.__file__)
        out.append(os.path.join(os.path.dirname(path), "*") if whole else path)
    return out


@contextmanager
def traced() -> Iterator[Traced]:
    """``with traced() as t:`` measure Python allocations of a block (``t.peak``, ``t.current``)."""
    t = Traced()
    t.start()
    try:
        yield t
    finally:
        t.stop()


def count_types() -> Counter[str]:
    """Live objects tracked by the garbage collector, by type (``module.Qualname``; builtins bare)."""
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        tp = type(obj)
        module = tp.__module__
        counts[tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"] += 1
    return counts


@dataclass
class GrowthResult:
    """What repeating a test body showed: memory after each iteration and the types that kept growing."""

    iterations: int
    warmup: int
    tolerance: int
    memory: list[int] = field(default_factory=list)
    grown_types: dict[str, int] = field(default_factory=dict)

    @property
    def fit(self) -> Fit | None:
        """Growth of traced memory per iteration (a least-squares slope), when measured."""
        return growth_per_step(self.memory) if len(self.memory) >= 2 else None

    @property
    def memory_grows(self) -> bool:
        """Whether traced memory kept growing by more than the tolerance per iteration."""
        return keeps_growing(self.memory, self.tolerance)

    @property
    def failed(self) -> bool:
        """Whether memory or some object type kept growing."""
        return self.memory_grows or bool(self.grown_types)

    def describe(self, top: int) -> str:
        """A report of the growth per iteration and the object types that grew."""
        fit = self.fit
        per_iter = format_size(robust_growth(self.memory), signed=True)
        verdict = "kept growing" if self.failed else "levelled off"
        lines = [
            f"memory {verdict} over {self.iterations} iterations after {self.warmup} warm-up: "
            f"{per_iter} per iteration (R² {fit.r2:.2f}), tolerance {format_size(self.tolerance)}"
            if fit
            else f"memory measured over {self.iterations} iterations",
            "traced memory after each iteration: " + ", ".join(format_size(m) for m in self.memory),
        ]
        if self.grown_types:
            lines.append("object types that grew in every iteration:")
            ranked = sorted(self.grown_types.items(), key=lambda kv: (-kv[1], kv[0]))
            for name, grew in ranked[:top]:
                lines.append(f"  {name}: +{grew} ({grew / self.iterations:+.1f} per iteration)")
            if len(ranked) > top:
                lines.append(f"  ... and {len(ranked) - top} more types")
        return "\n".join(lines)


def measure_growth(
    body: Callable[[], object], *, iterations: int, warmup: int, tolerance: int
) -> GrowthResult:
    """Run ``body`` ``warmup`` times, then ``iterations`` times measuring after each (with ``gc.collect``).

    Only a constant number of measurement objects is alive at any time, so the measuring itself shows
    no growth. Exceptions from ``body`` propagate.
    """
    for _ in range(warmup):
        body()
    with _Growth(iterations, warmup, tolerance) as growth:
        for _ in range(iterations):
            body()
            growth.measure()
    return growth.result


async def measure_growth_async(
    body: Callable[[], Awaitable[object]], *, iterations: int, warmup: int, tolerance: int
) -> GrowthResult:
    """:func:`measure_growth` for an async body (awaited each time)."""
    for _ in range(warmup):
        await body()
    with _Growth(iterations, warmup, tolerance) as growth:
        for _ in range(iterations):
            await body()
            growth.measure()
    return growth.result


class _Growth:
    """The measuring state of :func:`measure_growth`: traced memory and type counts after each step."""

    def __init__(self, iterations: int, warmup: int, tolerance: int) -> None:
        self.result = GrowthResult(iterations, warmup, tolerance)
        self.traced = Traced()
        self.baseline: Counter[str] = Counter()
        self.previous: Counter[str] = Counter()
        self.growing: set[str] = set()
        self.steps = 0
        self.files = client_files()

    def __enter__(self) -> _Growth:
        self.traced.start()
        gc.collect()
        self.baseline = count_types()
        # Everything the measuring keeps is allocated before the first measurement (two counters and a
        # set as large as it will ever be), so that the measuring itself shows no growth.
        self.previous = count_types()  # (not Counter(baseline): its memory would belong to collections)
        self.growing.update(self.baseline)
        self.result.memory.append(self.traced.current_excluding(self.files))
        return self

    def measure(self) -> None:
        gc.collect()
        self.result.memory.append(self.traced.current_excluding(self.files))
        self.previous = _still_growing(self.previous, self.growing, self.steps == 0)
        self.steps += 1

    def __exit__(self, *exc_info: object) -> None:
        self.traced.stop()
        if self.growing and self.steps >= 3:
            self.result.grown_types = {
                name: self.previous[name] - self.baseline.get(name, 0) for name in sorted(self.growing)
            }


def _still_growing(previous: Counter[str], growing: set[str], first: bool) -> Counter[str]:
    """Count types now; keep in ``growing`` only the types that increased since ``previous``."""
    counts = count_types()
    if first:
        growing.clear()
        growing.update(name for name, n in counts.items() if n > previous.get(name, 0))
    else:
        growing.intersection_update([name for name in growing if counts.get(name, 0) > previous.get(name, 0)])
    return counts

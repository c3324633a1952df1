"""Cost of one critical dump on a ~200 MB heap without tracing: time and extra memory.

    .venv/bin/python -m benchmarks.bench_dump [--mb 200] [--runs 5]

Builds a heap of ORM-row-like objects (an instance, a list, a dict and two strings each) until RSS has
grown by ``--mb``, then takes ``--runs`` dumps through ``memprof.dump`` and reports the median time,
the time of each part, the extra peak memory (VmHWM, reset before each dump through
``/proc/self/clear_refs``) and the file size. Targets: <= 150 ms and <= 10 MB extra.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MB = 1024 * 1024


class Row:
    def __init__(self, i: int) -> None:
        self.id = i
        self.name = f"customer-{i}"
        self.payload = "x" * 900 + str(i)
        self.tags = [i, i + 1]
        self.meta = {"i": i, "tags": self.tags}  # holds a container: tracked by gc


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def build_heap(mb: int) -> list[Row]:
    from memprof.memory import rss_bytes

    start = rss_bytes()
    rows: list[Row] = []
    while rss_bytes() - start < mb * _MB:
        rows.extend(Row(len(rows) + i) for i in range(10_000))
    return rows


def timed(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def flight_cost(runtime: Any, data_dir: Path, n: int = 500) -> None:
    """The watchdog's per-tick work: one RSS reading and a flight-recorder check (and a rewrite)."""
    from memprof.memory import peak_rss_bytes, rss_bytes
    from memprof.watchdog.flight import FlightRecorder

    recorder = FlightRecorder(data_dir, runtime.host)
    runtimes = [runtime]
    t0 = time.perf_counter_ns()
    for _ in range(n):
        recorder.update(runtimes, rss_bytes(), peak_rss_bytes())
    unchanged = (time.perf_counter_ns() - t0) / n / 1000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        recorder.update(runtimes, rss_bytes(), peak_rss_bytes(), force=True)
    written = (time.perf_counter_ns() - t0) / n / 1000
    recorder.remove()
    print(f"watchdog tick: {unchanged:.1f} us (nothing changed), {written:.1f} us (flight file rewritten)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="heap to build, MiB")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import memprof
    from memprof.memory import rss_bytes
    from memprof.middleware import MemprofMiddleware
    from memprof.watchdog import collect
    from memprof.watchdog.state import snapshot

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
        pass

    with tempfile.TemporaryDirectory() as tmp:
        middleware = MemprofMiddleware(
            app, settings=memprof.load_settings(data_dir=tmp, log_events=False, watchdog_interval_ms=0)
        )
        rows = build_heap(args.mb)
        gc.collect()
        print(
            f"heap: {len(rows):,} rows, RSS {rss_bytes() / _MB:.0f} MiB, {len(gc.get_objects()):,} gc objects"
        )
        memprof.dump("warm-up")

        totals, cpus, extras, sizes = [], [], [], []
        for i in range(args.runs):
            gc.collect()
            can_reset = _reset_peak()
            before = _status_kb("VmRSS")
            t0, c0 = time.perf_counter(), time.thread_time()
            path = memprof.dump(f"bench{i}")
            totals.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.thread_time() - c0) * 1000)
            if can_reset:
                extras.append((_status_kb("VmHWM") - before) / 1024)
            sizes.append(os.path.getsize(path or ""))
        parts = {
            "object counts": timed(collect.object_counts, args.runs),
            "thread stacks": timed(collect.thread_stacks, args.runs),
            "modules": timed(collect.modules, args.runs),
            "caches": timed(snapshot, args.runs),
            "gc stats": timed(collect.gc_stats, args.runs),
        }
        print(
            f"dump: median {statistics.median(totals):.1f} ms (min {min(totals):.1f}, max {max(totals):.1f})"
        )
        cpu = statistics.median(cpus)
        print(
            f"dump CPU time (the dumping thread): median {cpu:.1f} ms; load average {os.getloadavg()[0]:.1f}"
        )
        if extras:
            print(f"extra peak memory: median {statistics.median(extras):.1f} MiB (max {max(extras):.1f})")
        print(f"file: {statistics.median(sizes) / 1024:.0f} KiB")
        for name, ms in parts.items():
            print(f"  {name}: {ms:.1f} ms")
        flight_cost(middleware.runtime, Path(tmp))
        assert middleware.runtime.enabled and len(rows) > 0


if __name__ == "__main__":
    main()

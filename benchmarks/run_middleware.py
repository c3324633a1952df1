"""``make bench``: memprof's middleware against bare apps, in one process, one run.

For each case (a raw ASGI app, a trivial Starlette endpoint, a trivial FastAPI endpoint) three variants:
``bare`` (the ``_base`` app), ``unsampled`` (memprof light mode with ``sample_rate=0``: a random draw and
a branch) and ``sampled`` (light mode with ``sample_rate=1``: every request gets the five checkpoints
and a record). Variants are interleaved within each round; the figure is the median over rounds of the
request path's CPU time per request (the event loop thread), the overhead the median of the per-round
differences to ``bare``. The writer thread's CPU per record (off the request path) is reported apart.

    python -m benchmarks.run_middleware [--requests N] [--rounds R] [--markdown] [--heap-mb MB] [--case C]

``--heap-mb MB`` keeps MB of small Python objects alive while measuring, as a worker's heap: the heap
readings of a sampled request walk pymalloc's pools, so their cost grows with the heap (see
docs/performance.md); ``--case`` (repeatable) measures only the named cases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.asgi_driver import Batch, run_batch
from benchmarks.middleware import (
    fastapi_base,
    fastapi_memprof,
    raw_base,
    raw_memprof,
    starlette_base,
    starlette_memprof,
)
from memprof import MemprofMiddleware, MemprofSettings, load_settings

CASES: dict[str, tuple[ModuleType, ModuleType]] = {
    "raw ASGI": (raw_base, raw_memprof),
    "Starlette": (starlette_base, starlette_memprof),
    "FastAPI": (fastapi_base, fastapi_memprof),
}
# variant -> light-mode sample rate (None: the bare base app)
VARIANTS: dict[str, float | None] = {"bare": None, "unsampled": 0.0, "sampled": 1.0, "sampled+otel": 1.0}
TARGETS_US = {"unsampled": 1.0, "sampled": 12.0}
# "sampled+otel": sampled, with instrument_opentelemetry() in force (metrics; no span is active here).
OTEL_VARIANT = "sampled+otel"


def _otel_switch() -> tuple[Callable[[], None], Callable[[], None]] | None:
    """Turn memprof's OpenTelemetry export on and off (it is process-wide), or None without the SDK."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:
        return None
    from memprof.integrations.opentelemetry import instrument_opentelemetry, uninstrument_opentelemetry

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return (lambda: instrument_opentelemetry(meter_provider=provider)), uninstrument_opentelemetry


_selected: list[str] = list(CASES)


def _hold_heap(mb: int) -> list[Any]:
    """About ``mb`` MB of RSS in small objects (tuples of an int and a short string), kept alive."""
    from memprof.memory import rss_bytes

    start, held = rss_bytes(), []
    while rss_bytes() - start < mb * 1024 * 1024:
        held.extend((i, f"s{i}") for i in range(len(held), len(held) + 100_000))
    return held


def _runtime_of(app: Any) -> Any:
    """The memprof Runtime inside ``app`` (Starlette builds its middleware stack lazily)."""
    node = app
    for _ in range(20):
        if isinstance(node, MemprofMiddleware):
            return node.runtime
        node = getattr(node, "middleware_stack", None) or getattr(node, "app", None)
        if node is None:
            break
    return None


def variants() -> dict[str, float | None]:
    """The variants measured here (``sampled+otel`` only with the OpenTelemetry SDK installed)."""
    return {v: r for v, r in VARIANTS.items() if v != OTEL_VARIANT or _otel_switch() is not None}


def build_apps(data_dir: Path, requests: int, warmup: int) -> dict[tuple[str, str], Any]:
    apps: dict[tuple[str, str], Any] = {}
    for case, (base, mp) in CASES.items():
        if case not in _selected:
            continue
        for variant, rate in variants().items():
            if rate is None:
                apps[case, variant] = base.make_app()
                continue
            settings: MemprofSettings = load_settings(
                mode="light",
                sample_rate=rate,
                data_dir=data_dir / f"{case}-{variant}".replace(" ", "_"),
                log_events=False,  # a production app routes the event to its own logging; not measured here
                queue_size=max(requests, warmup)
                + 10,  # every record written, none dropped: the writer's cost in full
            )
            apps[case, variant] = mp.make_app(settings)
    return apps


def measure(requests: int, rounds: int, warmup: int, progress: Callable[[str], None]) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    results: dict[tuple[str, str], list[Batch]] = {}
    with tempfile.TemporaryDirectory(prefix="memprof-bench-", ignore_cleanup_errors=True) as tmp:
        apps = build_apps(Path(tmp), requests, warmup)
        switch = _otel_switch()

        def batch(key: tuple[str, str], n: int, after: Callable[[], object] | None = None) -> Batch:
            otel = switch is not None and key[1] == OTEL_VARIANT
            if otel:
                switch[0]()
            try:
                return run_batch(loop, apps[key], n, after=after)
            finally:
                if otel:
                    switch[1]()

        for key in apps:
            batch(key, warmup)  # builds Starlette's middleware stack, warms caches
            results[key] = []
        writers = {key: rt.writer for key, app in apps.items() if (rt := _runtime_of(app)) is not None}
        for key in writers:
            writers[key].flush(30.0)
        for r in range(rounds):
            progress(f"round {r + 1}/{rounds}")
            keys = list(apps)
            # rotate the order each round so no variant always runs right after another
            keys = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in keys:
                writer = writers.get(key)
                after = (lambda w=writer: w.flush(60.0)) if writer is not None else None
                results[key].append(batch(key, requests, after=after))
        dropped = {f"{c}/{v}": w.dropped for (c, v), w in writers.items()}
        for app in apps.values():
            runtime = _runtime_of(app)
            if runtime is not None and hasattr(runtime, "shutdown"):
                runtime.shutdown()  # writer flushed, background files (flight recorder) removed
    loop.close()
    return summarize(results, dropped)


def _us(ns: float, n: int) -> float:
    return ns / n / 1000.0


def summarize(results: dict[tuple[str, str], list[Batch]], dropped: dict[str, int]) -> dict[str, Any]:
    rows = []
    for case in _selected:
        bare = results[case, "bare"]
        bare_cpu = statistics.median(_us(b.thread_cpu_ns, b.n) for b in bare)
        for variant in variants():
            batches = results[case, variant]
            assert all(b.statuses_ok for b in batches), f"{case}/{variant}: a response was not 200"
            cpu = statistics.median(_us(b.thread_cpu_ns, b.n) for b in batches)
            wall = statistics.median(_us(b.wall_ns, b.n) for b in batches)
            overhead = statistics.median(
                _us(b.thread_cpu_ns, b.n) - _us(a.thread_cpu_ns, a.n)
                for a, b in zip(bare, batches, strict=True)
            )
            writer = statistics.median(_us(b.other_cpu_ns, b.n) for b in batches)
            # the quietest round of each: closest to the intrinsic cost on a shared machine
            best = min(_us(b.thread_cpu_ns, b.n) for b in batches) - min(
                _us(a.thread_cpu_ns, a.n) for a in bare
            )
            rows.append(
                {
                    "case": case,
                    "variant": variant,
                    "us_per_request": round(cpu, 2),
                    "wall_us_per_request": round(wall, 2),
                    "overhead_us": round(overhead, 2) if variant != "bare" else 0.0,
                    "best_overhead_us": round(best, 2) if variant != "bare" else 0.0,
                    "ratio": round(cpu / bare_cpu, 3),
                    "writer_us_per_request": round(writer, 2),
                    "target_us": TARGETS_US.get(variant),
                }
            )
    return {"rows": rows, "dropped": dropped}


def render_text(summary: dict[str, Any], requests: int, rounds: int) -> str:
    lines = [
        f"memprof middleware overhead: {requests} requests x {rounds} rounds per variant, medians "
        "(request path = event-loop thread CPU; writer = other threads' CPU, off the request path)",
        f"{'case':<10} {'variant':<13} {'us/req':>8} {'wall us':>8} {'overhead':>9} {'best':>7} {'ratio':>7} "
        f"{'writer us':>10} {'target':>8}",
    ]
    for row in summary["rows"]:
        target = row["target_us"]
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g} " + ("ok" if row["overhead_us"] <= target else "MISSED")
        lines.append(
            f"{row['case']:<10} {row['variant']:<13} {row['us_per_request']:>8.2f} "
            f"{row['wall_us_per_request']:>8.2f} {row['overhead_us']:>+9.2f} {row['best_overhead_us']:>+7.2f} "
            f"{row['ratio']:>6.3f}x "
            f"{row['writer_us_per_request']:>10.2f} {verdict:>8}"
        )
    if any(summary["dropped"].values()):
        lines.append(f"records dropped by full queues: {summary['dropped']}")
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| case | variant | µs/request (request path) | overhead µs (median) | overhead µs (best round) "
        "| ratio to bare | writer thread µs/request | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in summary["rows"]:
        target = row["target_us"]
        lines.append(
            f"| {row['case']} | {row['variant']} | {row['us_per_request']:.2f} | "
            f"{row['overhead_us']:+.2f} | {row['best_overhead_us']:+.2f} | {row['ratio']:.3f}x | "
            f"{row['writer_us_per_request']:.2f} | "
            + (f"<= {target:g} µs" if target is not None else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (the figure is the median)")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests per variant before measuring")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--heap-mb", type=int, default=0, help="MB of small objects kept alive meanwhile")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases")
    args = parser.parse_args(argv)
    _selected[:] = args.case or list(CASES)
    held = _hold_heap(args.heap_mb)
    if held:
        print(f"holding {len(held):,} small objects ({args.heap_mb} MB), {sys.getallocatedblocks():,} blocks")
    load_before = os.getloadavg()[0]
    summary = measure(args.requests, args.rounds, args.warmup, lambda m: print(m, file=sys.stderr))
    print(render_text(summary, args.requests, args.rounds))
    print(
        f"load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.markdown:
        print()
        print(render_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

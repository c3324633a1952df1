"""Where a sampled request's overhead goes: ``python -m benchmarks.breakdown``.

The raw ASGI case of ``make bench`` in light mode with ``sample_rate=1``, measured with parts of memprof
replaced in turn: the RSS readings (``memory.rss_at``: a ``/proc/self/statm`` read unless one was made
less than 20 µs before), the peak readings (``memory.peak_at``, ``getrusage`` likewise) and the hand-over
to the writer thread. It also counts the kernel reads a request really makes. Each difference to the full path is what that part costs per request;
what remains with all three removed is memprof's Python code. Medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import memprof.memory as memory_module
import memprof.profile as profile_module
import memprof.runtime as runtime_module
from benchmarks.asgi_driver import run_batch
from benchmarks.run_middleware import CASES, _runtime_of
from memprof import load_settings

STEPS = ("full path", "no RSS reads", "no peak reads", "no writer hand-over", "none of the three")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--case", choices=sorted(CASES), default="raw ASGI")
    args = parser.parse_args(argv)
    base_module, memprof_module = CASES[args.case]
    n = args.requests
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="memprof-breakdown-", ignore_cleanup_errors=True) as tmp:
        settings = load_settings(
            mode="light", sample_rate=1.0, data_dir=Path(tmp), log_events=False, queue_size=n + 10
        )
        app = memprof_module.make_app(settings)
        bare = base_module.make_app()
        run_batch(loop, app, 10)  # Starlette builds its middleware stack on the first request
        writer = _runtime_of(app).writer
        real: dict[str, Any] = {
            "p_rss": profile_module.rss_at,
            "r_rss": runtime_module.rss_at,
            "peak": runtime_module.peak_at,
            "submit": writer.submit,
        }

        def configure(step: str) -> None:
            no_rss = step in ("no RSS reads", "none of the three")
            no_peak = step in ("no peak reads", "none of the three")
            no_submit = step in ("no writer hand-over", "none of the three")
            profile_module.rss_at = (lambda now: 0) if no_rss else real["p_rss"]  # type: ignore[assignment]
            runtime_module.rss_at = (lambda now: 0) if no_rss else real["r_rss"]  # type: ignore[assignment]
            runtime_module.peak_at = (lambda now: 0) if no_peak else real["peak"]  # type: ignore[assignment]
            writer.submit = (lambda item, build: True) if no_submit else real["submit"]  # type: ignore[method-assign]

        per_step: dict[str, list[float]] = {step: [] for step in ("bare", *STEPS)}
        try:
            run_batch(loop, bare, 1000)
            run_batch(loop, app, 1000, after=lambda: writer.flush(30))
            for r in range(args.rounds):
                order = ("bare", *STEPS)
                order = order[r % len(order) :] + order[: r % len(order)]
                for step in order:
                    if step == "bare":
                        batch = run_batch(loop, bare, n)
                    else:
                        configure(step)
                        flush: Callable[[], object] = lambda: writer.flush(60)  # noqa: E731
                        batch = run_batch(loop, app, n, after=flush)
                    per_step[step].append(batch.thread_cpu_ns / n / 1000)
            configure("full path")
            reads = _kernel_reads(loop, app, n)
        finally:
            configure("full path")
            loop.close()
            runtime = _runtime_of(app)
            if hasattr(runtime, "shutdown"):
                runtime.shutdown()
    med = {step: statistics.median(values) for step, values in per_step.items()}
    full = med["full path"] - med["bare"]
    print(f"sampled request, {args.case}: {full:.2f} µs over bare ({n} requests x {args.rounds} rounds)")
    print(
        f"  RSS reads (4: request_start, response_start, response_end, request_end): "
        f"{med['full path'] - med['no RSS reads']:.2f} µs"
    )
    print(f"  peak reads (2: getrusage at start and end): {med['full path'] - med['no peak reads']:.2f} µs")
    print(f"  writer hand-over (submit): {med['full path'] - med['no writer hand-over']:.2f} µs")
    print(f"  memprof's Python code (none of the three): {med['none of the three'] - med['bare']:.2f} µs")
    print(f"  kernel reads per request: RSS {reads[0]:.2f}, peak {reads[1]:.2f}")
    return 0


def _kernel_reads(loop: asyncio.AbstractEventLoop, app: Any, n: int) -> tuple[float, float]:
    """RSS and peak kernel reads per request of the full path (the rest share a recent reading)."""
    counts = {"rss": 0, "peak": 0}
    rss, peak = memory_module.rss_bytes, memory_module.peak_rss_bytes

    def counted_rss() -> int:
        counts["rss"] += 1
        return rss()

    def counted_peak() -> int:
        counts["peak"] += 1
        return peak()

    memory_module.rss_bytes, memory_module.peak_rss_bytes = counted_rss, counted_peak  # type: ignore[assignment]
    try:
        run_batch(loop, app, n)
    finally:
        memory_module.rss_bytes, memory_module.peak_rss_bytes = rss, peak  # type: ignore[assignment]
    return counts["rss"] / n, counts["peak"] / n


if __name__ == "__main__":
    raise SystemExit(main())

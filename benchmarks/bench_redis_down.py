"""Request latency with the Redis control plane down, against memprof without Redis and a bare app.

    .venv/bin/python -m benchmarks.bench_redis_down [--rounds 200] [--requests 500]

Cases, each a real Starlette app called through ASGI in the same process and run interleaved in rounds:
``bare`` (no memprof), ``memprof`` (light mode, no Redis), ``redis_closed`` (MEMPROF_REDIS_URL at a
closed port on 127.0.0.1: connections refused), ``redis_blackhole`` (a listener that accepts and never
answers: every poll waits for the 0.25 s socket timeout). Reports the median µs per request over the
rounds (short shuffled rounds, so that a noisy neighbour on a shared machine hits every case alike),
the 10th percentile, and both as ratios to ``memprof``. The poller runs at its default interval (about once a second).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from memprof import MemprofMiddleware, load_settings
from tests.apps import starlette_app


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/users/7",
        "raw_path": b"/users/7",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


async def _run(app: Any, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    t0 = time.perf_counter_ns()
    for _ in range(n):
        await app(_scope(), receive, send)
    return (time.perf_counter_ns() - t0) / n / 1000


def _p10(values: list[float]) -> float:
    return sorted(values)[len(values) // 10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="memprof-bench-"))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # the kernel completes handshakes; nobody ever answers
    hole_port = blackhole.getsockname()[1]

    def memprof(name: str, **kw: Any) -> MemprofMiddleware:
        settings = load_settings(mode="light", data_dir=tmp / name, log_events=False, **kw)
        return MemprofMiddleware(starlette_app(), settings=settings)

    apps: dict[str, Any] = {
        "bare": starlette_app(),
        "memprof": memprof("plain"),
        "redis_closed": memprof("closed", redis_url=f"redis://127.0.0.1:{closed_port}/0"),
        "redis_blackhole": memprof("hole", redis_url=f"redis://127.0.0.1:{hole_port}/0"),
    }
    loop = asyncio.new_event_loop()
    for app in apps.values():
        loop.run_until_complete(_run(app, 200))  # warm up
    results: dict[str, list[float]] = {name: [] for name in apps}
    started = time.monotonic()
    order = list(apps)
    rng = random.Random(7)
    for _ in range(args.rounds):
        rng.shuffle(order)  # short rounds in a shuffled order: a noisy neighbour hits every case alike
        for name in order:
            results[name].append(loop.run_until_complete(_run(apps[name], args.requests)))
    elapsed = time.monotonic() - started

    base = statistics.median(results["memprof"])
    print(f"{args.rounds} rounds x {args.requests} requests per case, {elapsed:.1f} s in all")
    p10_base = _p10(results["memprof"])
    print(f"{'case':<16} {'median µs/req':>14} {'p10':>8} {'max':>8} {'median ratio':>13} {'p10 ratio':>10}")
    for name, values in results.items():
        med, p10 = statistics.median(values), _p10(values)
        print(
            f"{name:<16} {med:>14.1f} {p10:>8.1f} {max(values):>8.1f} {med / base:>12.3f}x "
            f"{p10 / p10_base:>9.3f}x"
        )
    for name in ("redis_closed", "redis_blackhole"):
        control = apps[name].runtime.control
        print(f"{name}: {control.ticks} polls, redis_ok={control.redis_ok}, error={control.redis_error}")
    blackhole.close()


if __name__ == "__main__":
    main()

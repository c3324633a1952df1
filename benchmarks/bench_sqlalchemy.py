"""SQLAlchemy overhead: a bare FastAPI app vs the same app under memprof, in the same run.

Two endpoints over a real SQLite file: a primary-key lookup (``Session.get``) and a 1000-row ORM
select. Variants, each with its own engine on the same database so an instrumented engine never
slows the baseline:

- ``bare``: no memprof at all;
- ``light``: MemprofMiddleware in light mode (1% sampled) + ``instrument_sqlalchemy`` (the 99% of
  requests that are not profiled still pass through the listeners);
- ``aggressive``: every request profiled with everything (queries, rows, models, engines), written to
  JSONL by the writer thread;
- ``aggressive_noload``: the aggressive app again with ``count_instances=False`` (no per-instance
  ``load`` listener), in a second pass on the 1000-row select.

The ASGI app is called directly (no HTTP client) so the figure is the app's own time. Rounds
interleave the variants in a shuffled order; the report gives medians of per-request µs and the ratio
of each variant's median to bare's. Run: ``make bench-sql`` (or ``python -m benchmarks.bench_sqlalchemy``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

import memprof
from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from tests.sqla_apps import make_schema, seed, sync_app

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _request(app: App, path: str) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], (path, status)


async def _time(app: App, path: str, n: int) -> float:
    """Microseconds per request over ``n`` requests."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await _request(app, path)
    return (time.perf_counter_ns() - t0) / n / 1000


def build(tmp: Path) -> tuple[dict[str, App], dict[str, Any]]:
    schema = make_schema()
    db = tmp / "bench.db"
    setup = create_engine(f"sqlite:///{db}")
    schema.Base.metadata.create_all(setup)
    with Session(setup) as session:
        seed(session, schema, authors=20, books=50, awards=0)  # 1000 books
    setup.dispose()
    engines = {name: create_engine(f"sqlite:///{db}") for name in ("bare", "light", "aggr")}
    apps: dict[str, App] = {"bare": sync_app(schema, sessionmaker(engines["bare"]))}
    light = memprof.load_settings(mode="light", data_dir=tmp / "light", log_events=False)
    aggressive = memprof.load_settings(mode="aggressive", data_dir=tmp / "aggr", log_events=False)
    instrument_sqlalchemy(engines["light"])
    instrument_sqlalchemy(engines["aggr"])
    apps["light"] = MemprofMiddleware(sync_app(schema, sessionmaker(engines["light"])), settings=light)
    apps["aggressive"] = MemprofMiddleware(
        sync_app(schema, sessionmaker(engines["aggr"])), settings=aggressive
    )
    return apps, engines


async def measure(apps: dict[str, App], path: str, n: int, rounds: int) -> dict[str, list[float]]:
    for app in apps.values():  # warm up: compiled caches, connection pools, threadpool
        await _time(app, path, max(3, n // 5))
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        order = list(apps)
        random.shuffle(order)
        for name in order:
            results[name].append(await _time(apps[name], path, n))
        memprof.flush(10.0)
    return results


def report(title: str, results: dict[str, list[float]]) -> list[str]:
    base = statistics.median(results["bare"])
    lines = [f"{title}", f"  {'variant':<20}{'median µs':>12}{'ratio':>8}"]
    for name, values in results.items():
        med = statistics.median(values)
        lines.append(f"  {name:<20}{med:>12.1f}{med / base:>8.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pk-requests", type=int, default=200)
    parser.add_argument("--rows-requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        apps, engines = build(Path(tmp))

        async def run() -> list[str]:
            out = []
            for label, path, n in (
                ("primary-key lookup (GET /users/1)", "/users/1", args.pk_requests),
                ("1000-row ORM select (GET /books)", "/books", args.rows_requests),
            ):
                out += report(label, await measure(apps, path, n, args.rounds))
            return out

        lines = asyncio.run(run())
        # Second pass: the cheaper counting (no per-instance load listener) on the 1000-row select.
        uninstrument_sqlalchemy()
        instrument_sqlalchemy(engines["aggr"], count_instances=False)
        noload = {"bare": apps["bare"], "aggressive_noload": apps["aggressive"]}
        lines += report(
            "1000-row ORM select, count_instances=False",
            asyncio.run(measure(noload, "/books", args.rows_requests, args.rounds)),
        )
        uninstrument_sqlalchemy()
        for engine in engines.values():
            engine.dispose()
    print("\n".join(lines))


if __name__ == "__main__":
    main()

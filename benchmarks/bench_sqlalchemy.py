"""``make bench-sql``: the SQLAlchemy integration's cost, bare vs memprof, in one process, one run.

Two FastAPI endpoints over a real SQLite file (an ``async def`` endpoint using a sync ``Session``, so
the whole request path runs on the event-loop thread and its CPU time is measurable apart from the
writer thread): a primary-key lookup (``Session.get``) and a 1000-row ORM select. Variants:

- ``bare``: no memprof, no listeners;
- ``light``: MemprofMiddleware in light mode (1% sampled) with SQLAlchemy instrumented;
- ``light_unsampled``: the same with sample rate 0: what each of the 99% unprofiled requests pays;
- ``aggr_mw_only``: aggressive mode, SQLAlchemy not instrumented (the middleware's own cost);
- ``aggressive``: aggressive mode with SQLAlchemy instrumented: every request gets queries, rows,
  models, engines;
- ``aggr_noload``: the same with ``instrument_sqlalchemy(count_instances=False)``.

Each round runs every variant once, in a shuffled order, instrumenting and uninstrumenting between
them; each variant has its own engine (on the same SQLite file), so that ``bare`` stays bare. The
middleware would instrument every engine by itself (``MEMPROF_SQLALCHEMY=auto``); here it is told not
to (``sqlalchemy="off"``) and the variant's own engine is instrumented instead: the same listeners, on
one engine only. ``benchmarks/callgrind_sqlalchemy.py`` measures the one-line set-up itself. Figures are medians over rounds of per-request microseconds: the request path's CPU (the event
loop thread), the writer thread's CPU (records built and written off the request path) and wall time.
Ratios are the median over rounds of each round's ratio to ``bare``.

    python -m benchmarks.bench_sqlalchemy [--rounds R] [--pk-requests N] [--rows-requests N] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

import memprof
from benchmarks.asgi_driver import Batch, run_batch
from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from tests.sqla_apps import Schema, make_schema, seed

VARIANTS = ("bare", "light", "light_unsampled", "aggr_mw_only", "aggressive", "aggr_noload")
# Targets of request-path CPU against bare: (aggressive, light_unsampled).
TARGETS = {"/users/1": (1.15, 1.02), "/books": (1.25, 1.03)}


def bench_app(schema: Schema, engine: Engine) -> FastAPI:
    app = FastAPI()
    User, Book = schema.User, schema.Book

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, Any]:
        with Session(engine) as session:
            found = session.get(User, user_id)
            return {"email": found.email if found else None}

    @app.get("/books")
    async def books() -> dict[str, int]:
        with Session(engine) as session:
            return {"books": len(session.scalars(select(Book)).all())}

    return app


def build(tmp: Path) -> tuple[dict[str, Any], list[Engine], Callable[[str], None]]:
    """The apps of every variant, their engines (one per variant, on one SQLite file) and a function
    that sets up the listeners a variant needs.

    One engine per variant: SQLAlchemy never resets an engine's ``_has_events`` flag, so an engine
    that once had a connection listener keeps joining its event dispatch into every Connection (about
    30 µs more per ``Session.get``) after the listener is removed; a shared engine would make ``bare``
    pay for an earlier instrumented round."""
    schema = make_schema()
    url = f"sqlite:///{tmp / 'bench.db'}"
    engines = {name: create_engine(url) for name in VARIANTS}
    schema.Base.metadata.create_all(engines["bare"])
    with Session(engines["bare"]) as session:
        seed(session, schema, authors=20, books=50, awards=0)  # 1000 books

    def settings(mode: str, name: str, **more: Any) -> memprof.MemprofSettings:
        return memprof.load_settings(
            mode=mode, data_dir=tmp / name, log_events=False, sqlalchemy="off", **more
        )

    apps = {
        "bare": bench_app(schema, engines["bare"]),
        "light": MemprofMiddleware(bench_app(schema, engines["light"]), settings=settings("light", "light")),
        "light_unsampled": MemprofMiddleware(
            bench_app(schema, engines["light_unsampled"]),
            settings=settings("light", "light_unsampled", sample_rate=0.0),
        ),
    }
    for name in VARIANTS[3:]:
        apps[name] = MemprofMiddleware(
            bench_app(schema, engines[name]), settings=settings("aggressive", name)
        )

    def listeners(variant: str) -> None:
        uninstrument_sqlalchemy()
        if variant in ("light", "light_unsampled", "aggressive"):
            instrument_sqlalchemy(engines[variant])
        elif variant == "aggr_noload":
            instrument_sqlalchemy(engines[variant], count_instances=False)

    return apps, list(engines.values()), listeners


def measure(
    apps: dict[str, Any], listeners: Callable[[str], None], path: str, n: int, rounds: int
) -> dict[str, list[Batch]]:
    loop = asyncio.new_event_loop()
    flush = lambda: memprof.flush(30.0)  # noqa: E731 - the writer's work for the batch is counted in full
    try:
        for name, app in apps.items():  # warm up: compiled caches, pool, imports
            listeners(name)
            run_batch(loop, app, max(3, n // 4), path=path, after=flush)
        results: dict[str, list[Batch]] = {name: [] for name in apps}
        for _ in range(rounds):
            order = list(apps)
            random.shuffle(order)
            for name in order:
                listeners(name)
                batch = run_batch(loop, apps[name], n, path=path, after=flush)
                assert batch.statuses_ok, (name, path)
                results[name].append(batch)
        return results
    finally:
        uninstrument_sqlalchemy()
        loop.close()


def report(title: str, path: str, results: dict[str, list[Batch]], markdown: bool) -> list[str]:
    """Medians of per-request µs, and the median over rounds of each round's ratio to ``bare`` (pairs
    within a round cancel the drift of a shared machine's load)."""

    def per_request(name: str, field: str) -> list[float]:
        return [getattr(b, field) / b.n / 1000 for b in results[name]]

    def ratio(name: str, field: str) -> float:
        pairs = zip(per_request(name, field), per_request("bare", field), strict=True)
        return statistics.median(v / base for v, base in pairs)

    head = ["variant", "request path CPU µs", "ratio", "writer CPU µs", "wall µs", "wall ratio"]
    rows = [
        [
            name,
            f"{statistics.median(per_request(name, 'thread_cpu_ns')):.1f}",
            f"{ratio(name, 'thread_cpu_ns'):.3f}",
            f"{statistics.median(per_request(name, 'other_cpu_ns')):.1f}",
            f"{statistics.median(per_request(name, 'wall_ns')):.1f}",
            f"{ratio(name, 'wall_ns'):.3f}",
        ]
        for name in results
    ]
    aggressive, unsampled = TARGETS[path]
    target = f"targets: aggressive <= {aggressive}x, light_unsampled <= {unsampled}x"
    if markdown:
        lines = [f"**{title}** ({target})", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        return [*lines, *("| " + " | ".join(r) + " |" for r in rows), ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return [f"{title} ({target})", fmt(head), *(fmt(r) for r in rows), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description="SQLAlchemy integration overhead")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--pk-requests", type=int, default=40)
    parser.add_argument("--rows-requests", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        apps, engines, listeners = build(Path(tmp))
        lines: list[str] = []
        for title, path, n in (
            ("Primary-key lookup, GET /users/1", "/users/1", args.pk_requests),
            ("1000-row ORM select, GET /books", "/books", args.rows_requests),
        ):
            lines += report(title, path, measure(apps, listeners, path, n, args.rounds), args.markdown)
        for engine in engines:
            engine.dispose()
    print("\n".join(lines))


if __name__ == "__main__":
    main()

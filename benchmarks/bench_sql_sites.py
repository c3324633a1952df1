"""The cost of naming a statement's frames and loop (``frame``, ``library``, ``loop``) in full profiles.

A service loop over a repository helper (``tests/shop``: ``rename_all`` runs ``Repository.get_one`` once per
slug) on SQLite, in a full (aggressive) profile set in the context the way the middleware sets it. Paired
batches in one process: the listeners as they are, and with the stack capture replaced by a no-op. Figures:
medians of the request-path CPU time (thread time) per request and per execution, and the mean time of one
capture (each statement is captured at its executions 1, 2, threshold - 1 and threshold only).

    python -m benchmarks.bench_sql_sites [--rounds R] [--items N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from memprof import instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.integrations.sqlalchemy import _events
from memprof.profile import RequestProfile, _current
from tests.shop.repository import Repository
from tests.shop.service import Base, Recipe, rename_all, seed


def _request(engine: Any, slugs: list[str]) -> None:
    token = _current.set(RequestProfile("GET", "/rename", "aggressive", True))
    try:
        with Session(engine) as session:
            rename_all(Repository(session, Recipe), slugs)
    finally:
        _current.reset(token)


def _batch(engine: Any, slugs: list[str], n: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(n):
        _request(engine, slugs)
    return (time.thread_time_ns() - t0) / n / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description="cost of the frames and loop of full-profile statements")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--items", type=int, default=50, help="executions of the statement per request")
    args = parser.parse_args()
    slugs = [f"r{i % 12}" for i in range(args.items)]
    real = _events.observe_sites
    calls = [0, 0]

    def timed(stat: Any, n: int, threshold: int) -> None:
        t0 = time.thread_time_ns()
        real(stat, n, threshold)
        calls[0] += 1
        calls[1] += time.thread_time_ns() - t0

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'shop.db'}")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            seed(session)
        instrument_sqlalchemy(engine)
        try:
            on: list[float] = []
            off: list[float] = []
            for _ in range(3):  # warm up: caches, compiled statements
                _request(engine, slugs)
            for _ in range(args.rounds):
                _events.observe_sites = timed  # type: ignore[assignment]
                on.append(_batch(engine, slugs, 10))
                _events.observe_sites = lambda stat, n, threshold: None  # type: ignore[assignment]
                off.append(_batch(engine, slugs, 10))
        finally:
            _events.observe_sites = real  # type: ignore[assignment]
            uninstrument_sqlalchemy()
            engine.dispose()
    med_on, med_off = statistics.median(on), statistics.median(off)
    print(f"{args.items} executions of one statement per request, {args.rounds} rounds of 10 requests")
    print(f"full profile, frames and loop:   {med_on:8.1f} us per request")
    print(f"full profile, no stack capture:  {med_off:8.1f} us per request")
    print(
        f"difference: {med_on - med_off:6.1f} us per request, {(med_on - med_off) / args.items:.2f} us per execution"
    )
    print(
        f"one capture (observe_sites): {calls[1] / calls[0] / 1000:.1f} us CPU, mean of {calls[0]} captures"
    )


if __name__ == "__main__":
    main()

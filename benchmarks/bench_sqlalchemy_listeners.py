"""The SQLAlchemy listeners' own cost, without HTTP: ``Session.get`` and a 1000-row select in a loop.

Two engines on one SQLite file, one instrumented, used alternately in paired batches (the same
process, the same moment): what the listeners add per request when the request is not profiled, when
it is a light profile, and when it is a full one. A profile is set in the context the way the
middleware sets it. Figures: medians of the request-path CPU time (thread time) per request.

    python -m benchmarks.bench_sqlalchemy_listeners [--rounds R] [--no-load-listener]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from memprof import instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.profile import RequestProfile, _current
from tests.sqla_apps import Schema, make_schema, seed

# (label, engine index, profile: None, light (False) or full (True))
VARIANTS: tuple[tuple[str, int, bool | None], ...] = (
    ("bare engine, no profile", 0, None),
    ("bare engine, full profile", 0, True),
    ("instrumented, no profile", 1, None),
    ("instrumented, light profile", 1, False),
    ("instrumented, full profile", 1, True),
)


def _request(schema: Schema, engine: Engine, full: bool | None, rows: bool) -> None:
    token = _current.set(RequestProfile("GET", "/", "aggressive", full)) if full is not None else None
    with Session(engine) as session:
        if rows:
            session.scalars(select(schema.Book)).all()
        else:
            session.get(schema.User, 1)
    if token is not None:
        _current.reset(token)


def _batch(fn: Callable[[], None], n: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - t0) / n / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description="SQLAlchemy listeners' own cost")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-load-listener", action="store_true", help="count_instances=False")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = make_schema()
        engines = [create_engine(f"sqlite:///{Path(tmp) / 'l.db'}") for _ in range(2)]
        schema.Base.metadata.create_all(engines[0])
        with Session(engines[0]) as session:
            seed(session, schema, authors=20, books=50, awards=0)
        instrument_sqlalchemy(engines[1], count_instances=not args.no_load_listener)
        try:
            for title, rows, n, rounds in (
                ("Session.get", False, 20, args.rounds),
                ("1000-row select", True, 1, max(20, args.rounds // 4)),
            ):
                fns = {
                    label: (lambda e=engines[i], f=full, r=rows: _request(schema, e, f, r))
                    for label, i, full in VARIANTS
                }
                for fn in fns.values():
                    _batch(fn, n * 5)
                results: dict[str, list[float]] = {label: [] for label in fns}
                for _ in range(rounds):
                    for label, fn in fns.items():
                        results[label].append(_batch(fn, n))
                base = statistics.median(results[VARIANTS[0][0]])
                print(f"{title}: request-path CPU µs (median of {rounds} rounds of {n})")
                for label, values in results.items():
                    med = statistics.median(values)
                    print(f"  {label:<30}{med:10.1f}{med - base:+10.1f}")
        finally:
            uninstrument_sqlalchemy()
            for engine in engines:
                engine.dispose()


if __name__ == "__main__":
    main()

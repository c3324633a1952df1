"""Instructions per request, bare SQLAlchemy against memprof, counted by ``valgrind --tool=callgrind``.

Deterministic where timings on a shared machine are not: each (variant, path) runs in its own process
under callgrind twice, with ``--small`` and ``--large`` requests after the same warm-up, and the
difference of the two totals divided by the difference of the request counts is what one request
executes (start-up, imports and warm-up cancel out). Background threads are quiet: the watchdog is
off and the control thread polls once a minute. Variants:

- ``bare``: the FastAPI app alone (no memprof);
- ``light``: ``app.add_middleware(MemprofMiddleware)`` only, light mode, sample rate 0: what the
  unprofiled requests of light mode pay, SQLAlchemy instrumented by the middleware;
- ``aggressive``: the same in aggressive mode (every request profiled in full, the writer thread's
  work for its record included).

Paths: ``/users/1`` (a primary-key lookup, ``Session.get``) and ``/books`` (a 1000-row ORM select).

    python -m benchmarks.callgrind_sqlalchemy [--variants bare,light] [--small 20] [--large 120]
    python -m benchmarks.callgrind_sqlalchemy --run light /books 20      # one run, what valgrind runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PATHS = {"/users/1": "primary-key lookup", "/books": "1000-row select"}
VARIANTS = ("bare", "light", "aggressive")


def _app(variant: str, tmp: Path) -> Any:
    from fastapi import FastAPI
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from memprof import MemprofMiddleware, load_settings
    from tests.sqla_apps import make_schema, seed

    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp / 'cg.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=20, books=50, awards=0)  # 1000 books
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

    if variant != "bare":
        settings = load_settings(
            mode=variant,
            sample_rate=0.0 if variant == "light" else 1.0,
            data_dir=tmp / "data",
            log_events=False,
            watchdog_interval_ms=0,
            control_poll_interval_s=60,
        )
        app.add_middleware(MemprofMiddleware, settings=settings)
    return app


def run_one(variant: str, path: str, n: int) -> None:
    """Warm up, then send ``n`` requests (the process valgrind measures)."""
    import memprof
    from benchmarks.asgi_driver import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        app = _app(variant, Path(tmp))
        loop = asyncio.new_event_loop()
        run_batch(loop, app, 10, path=path, after=lambda: memprof.flush(30.0))
        batch = run_batch(loop, app, n, path=path, after=lambda: memprof.flush(30.0))
        assert batch.statuses_ok, (variant, path)
        loop.close()


def _instructions(variant: str, path: str, n: int, out_dir: Path) -> int:
    out = out_dir / f"cg-{variant}-{path.strip('/').replace('/', '_')}-{n}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0", "MEMPROF_RAISE_INTERNAL_ERRORS": "1"}
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m"]
    cmd += ["benchmarks.callgrind_sqlalchemy", "--run", variant, path, str(n)]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    assert found, out
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description="SQLAlchemy integration: instructions per request")
    parser.add_argument("--run", nargs=3, metavar=("VARIANT", "PATH", "N"))
    parser.add_argument("--variants", default="bare,light")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=120)
    args = parser.parse_args()
    if args.run:
        run_one(args.run[0], args.run[1], int(args.run[2]))
        return
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths.split(","):
            per_request = {}
            for variant in variants:
                small = _instructions(variant, path, args.small, Path(tmp))
                large = _instructions(variant, path, args.large, Path(tmp))
                per_request[variant] = (large - small) / (args.large - args.small)
            print(f"{PATHS.get(path, path)}, GET {path}: instructions per request")
            for variant, count in per_request.items():
                ratio = f"  {count / per_request['bare']:.4f}x bare" if "bare" in per_request else ""
                print(f"  {variant:<11}{count:14,.0f}{ratio}")


if __name__ == "__main__":
    main()

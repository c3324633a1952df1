"""Heap readings: what one reading costs, and how far each candidate is from tracemalloc's peak.

    .venv/bin/python -m benchmarks.bench_heap                 # both parts, about 2 min
    .venv/bin/python -m benchmarks.bench_heap --part cost     # cost per reading only
    .venv/bin/python -m benchmarks.bench_heap --part error    # error against tracemalloc only
    .venv/bin/python -m benchmarks.bench_heap --part request  # an isolated sampled request only

Candidates for a per-request "Python heap in use" figure that memory freed and reused does not hide:

- ``blocks``: ``sys.getallocatedblocks()`` (pymalloc blocks in use, plus one per larger allocation),
  turned into bytes at 64 bytes a block; ``blocks_x<B>`` other block sizes for comparison;
- ``mallinfo2``: glibc's ``mallinfo2()`` through ctypes, ``uordblks + hblkhd`` (malloc'd bytes in use,
  mmapped chunks included; pymalloc's arenas are mmapped directly and not counted);
- ``blocks+mallinfo2``: the two together (pymalloc estimate + malloc'd bytes);
- ``rss``: the resident set size, as memprof reads it today;
- ``tracemalloc``: ``tracemalloc.get_traced_memory()``, exact, only meaningful while tracing.

Part ``cost``: the median time of one reading, each heap in its own process: an empty heap, an idle
worker's (FastAPI and SQLAlchemy imported), heaps of 100 and 400 MB of small Python objects (pymalloc), and a malloc heap fragmented by freeing every other
chunk of 600-5,000 bytes, with 1 and 8 threads having allocated (glibc gives threads their own arenas).

Part ``error``: real workloads, each in a fresh process, on a fresh heap and on a warm one (the same
workload 1.5x larger ran and was freed first, like a worker after its first big request). Readings are
taken where memprof takes them: at checkpoints (after the statement, after building, after encoding, at
the end) and at the start of every garbage collection (memprof reads there while a profiled request is in
flight, at most once per sharing window); a candidate's growth is its highest reading minus its first. The truth is tracemalloc's peak above the
start for the same workload in another process with tracing on from the start. Reported: each
candidate's growth and its ratio to the truth (the issue's bar: within a factor of 2).

Part ``request``: what the heap readings add to a sampled request whose readings are all fresh (light
mode samples one request in a while): a raw ASGI app with and without memprof (light, every request
sampled, 10 ms apart), request by request, on heaps of each size.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


_libc = ctypes.CDLL(None)
_mallinfo2 = _libc.mallinfo2
_mallinfo2.restype = _MallInfo2


def mallinfo2_bytes() -> int:
    """Bytes malloc has handed out and not got back (``uordblks + hblkhd``)."""
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


def rss() -> int:
    from memprof.memory import rss_bytes

    return rss_bytes()


READERS: dict[str, Callable[[], int]] = {
    "rss": rss,
    "blocks": sys.getallocatedblocks,
    "mallinfo2": mallinfo2_bytes,
    "tracemalloc": lambda: tracemalloc.get_traced_memory()[0],
}


# -- cost ----------------------------------------------------------------------------------------
def _per_call_us(fn: Callable[[], int], budget_s: float = 0.3) -> float:
    """Median over 7 batches of the time of one call, in µs (batches sized to the budget)."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    n = max(3, min(20_000, int(budget_s / 7 / once)))
    times = []
    for _ in range(7):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        times.append((time.perf_counter_ns() - t0) / n / 1000)
    return statistics.median(times)


def _small_objects(mb: int) -> list[Any]:
    """About ``mb`` MB of RSS in small Python objects (pymalloc): tuples of an int and a short string."""
    start = rss()
    out: list[Any] = []
    while rss() - start < mb * _MB:
        out.extend((i, f"s{i}") for i in range(len(out), len(out) + 100_000))
    return out


def _fragment_malloc(count: int) -> list[bytes]:
    """Chunks of 600-5,000 bytes (malloc, not pymalloc), every other one freed: free chunks in bins."""
    keep = [bytes(random.randint(600, 5000)) for _ in range(count)]
    random.shuffle(keep)
    del keep[::2]
    return keep


def cost_child(heap: str) -> dict[str, Any]:
    """One heap state, measured in this process (see the module docstring)."""
    held: list[Any] = []
    release = threading.Event()
    threads: list[threading.Thread] = []
    if heap == "imports":  # an idle web worker: its framework and ORM imported, nothing else
        import fastapi  # noqa: F401
        import sqlalchemy.orm  # noqa: F401
        import starlette.applications  # noqa: F401
    elif heap.startswith("pymalloc"):
        held.append(_small_objects(int(heap.split("-")[1])))
    elif heap.startswith("fragmented"):
        n_threads = int(heap.split("-")[1])
        held.append(_fragment_malloc(100_000))

        def work() -> None:
            mine = _fragment_malloc(50_000)
            release.wait()
            del mine

        threads = [threading.Thread(target=work) for _ in range(n_threads - 1)]
        for t in threads:
            t.start()
        time.sleep(2.0 + 0.5 * len(threads))
    out: dict[str, Any] = {
        "heap": heap,
        "rss_mb": round(rss() / _MB),
        "block_count": sys.getallocatedblocks(),
    }
    out["free_chunks"] = int(_mallinfo2().ordblks)
    for name in ("rss", "blocks", "mallinfo2"):
        out[name] = round(_per_call_us(READERS[name]), 3)
    tracemalloc.start(1)
    out["tracemalloc"] = round(_per_call_us(READERS["tracemalloc"]), 3)
    tracemalloc.stop()
    release.set()
    for t in threads:
        t.join()
    return out


# -- workloads -------------------------------------------------------------------------------------
def _item(item_cls: Any, i: int, when: Any) -> Any:
    return item_cls(id=i, name=f"item {i}", code=f"C{i:06d}", qty=i % 97, owner_id=i % 13, price=i / 7,
                    active=i % 2 == 0, note="n" * (i % 120), rank=i, state="open", version=1, created=when,
                    label=f"label {i % 50}")  # fmt: skip


def _orm_setup(path: Path) -> tuple[Any, Any]:
    import datetime

    from sqlalchemy import Boolean, DateTime, Float, Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):  # 13 attributes, as in the issue
        __tablename__ = "item"
        id = mapped_column(Integer, primary_key=True)
        name = mapped_column(String(50))
        code = mapped_column(String(20))
        qty = mapped_column(Integer)
        owner_id = mapped_column(Integer)
        price = mapped_column(Float)
        active = mapped_column(Boolean)
        note = mapped_column(String(200))
        rank = mapped_column(Integer)
        state = mapped_column(String(20))
        version = mapped_column(Integer)
        created = mapped_column(DateTime)
        label = mapped_column(String(30))

    engine = create_engine(f"sqlite:///{path}")
    if not path.exists():
        Base.metadata.create_all(engine)
        when = datetime.datetime(2026, 1, 1)
        with Session(engine) as session:
            session.add_all(_item(item_cls=Item, i=i, when=when) for i in range(1, 45_001))
            session.commit()
    return engine, Item


def workload(name: str, n: int, db: Path) -> Callable[[Callable[[], None]], None]:
    """The body of one request of workload ``name`` with size ``n``; it calls ``cp()`` where memprof reads."""
    if name == "orm":
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        engine, item = _orm_setup(db)

        def orm(cp: Callable[[], None]) -> None:
            with Session(engine) as session:
                items = session.scalars(select(item).order_by(item.id).limit(n)).all()
                cp()  # statement end (rows fetched) and the instances built
                body = json.dumps(
                    [{"id": i.id, "name": i.name, "note": i.note, "price": i.price} for i in items]
                )
                cp()  # response_start: the body is built
                del items, body
            cp()

        return orm
    if name == "json":

        def build_json(cp: Callable[[], None]) -> None:
            rows = [
                {"id": i, "name": f"user {i}", "tags": ["a", "b", str(i)], "score": i / 3} for i in range(n)
            ]
            cp()
            body = json.dumps(rows).encode()
            cp()
            del rows, body
            cp()

        return build_json
    if name == "string":

        def big_string(cp: Callable[[], None]) -> None:
            lines = [f"{i},customer {i},{i * 7 % 1000},some text here" for i in range(n)]
            cp()
            text = "\n".join(lines)
            cp()
            del lines, text
            cp()

        return big_string
    if name == "bytes":

        def big_bytes(cp: Callable[[], None]) -> None:
            chunks = [os.urandom(4096) for _ in range(n)]
            cp()
            blob = b"".join(chunks)
            cp()
            del chunks, blob
            cp()

        return big_bytes
    raise ValueError(f"unknown workload {name!r}")


WORKLOADS = [("orm", 1_000), ("orm", 20_000), ("json", 100_000), ("string", 300_000), ("bytes", 5_000)]


def error_child(name: str, n: int, warm: bool, traced: bool, db: Path) -> dict[str, Any]:
    """Run one workload (after a 1.5x warm-up when ``warm``) and report the readings or the traced peak."""
    body = workload(name, n, db)
    warmup = workload(name, int(n * 1.5), db)
    if traced:
        tracemalloc.start(1)
    if warm:
        # A worker's heap stays big after its first big request because a few objects allocated meanwhile
        # (log records, cache entries, the next request's state) outlive it and pin pymalloc arenas and
        # the malloc heap: one small dict and one 600-byte chunk kept at each gen-0 collection.
        survivors: list[Any] = []

        def pin(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                survivors.append(({"pinned": len(survivors)}, bytearray(600)))

        gc.callbacks.append(pin)
        warmup(lambda: None)
        gc.callbacks.remove(pin)
    else:
        workload(name, 10, db)(lambda: None)  # imports, caches and compiled statements ready
    gc.collect()
    if traced:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        body(lambda: None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"traced_peak": peak - base}
    readings: list[dict[str, int]] = []

    def cp() -> None:
        readings.append({"rss": rss(), "blocks": sys.getallocatedblocks(), "mallinfo2": mallinfo2_bytes()})

    def at_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            cp()

    cp()
    gc.callbacks.append(at_collection)  # memprof reads at collections too (memprof.heap_peak)
    try:
        body(cp)
    finally:
        gc.callbacks.remove(at_collection)
    return {"readings": readings}


def _growth(readings: list[dict[str, int]], fn: Callable[[dict[str, int]], float]) -> float:
    return max(fn(r) for r in readings) - fn(readings[0])


ESTIMATORS: dict[str, Callable[[dict[str, int]], float]] = {
    "rss": lambda r: r["rss"],
    "mallinfo2": lambda r: r["mallinfo2"],
    "blocks_x48": lambda r: r["blocks"] * 48,
    "blocks_x64": lambda r: r["blocks"] * 64,
    "blocks_x96": lambda r: r["blocks"] * 96,
    "blocks_x64+mallinfo2": lambda r: r["blocks"] * 64 + r["mallinfo2"],
}


def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_heap", "--child", json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_cost() -> None:
    print("cost of one reading, µs (median of 7 batches); each heap in its own process")
    print(f"{'heap':<16} {'RSS MB':>7} {'blocks':>11} {'free chunks':>11} "
          f"{'rss':>7} {'getallocatedblocks':>19} {'mallinfo2':>10} {'tracemalloc':>12}")  # fmt: skip
    for heap in ("empty", "imports", "pymalloc-100", "pymalloc-400", "fragmented-1", "fragmented-8"):
        r = _child(["cost", heap])
        print(f"{heap:<16} {r['rss_mb']:>7} {r['block_count']:>11,} {r['free_chunks']:>11,} {r['rss']:>7.2f} "
              f"{r['blocks']:>19.2f} {r['mallinfo2']:>10.2f} {r['tracemalloc']:>12.2f}")  # fmt: skip


def run_error() -> None:
    print("growth of one request (MiB) by candidate, and its ratio to tracemalloc's peak")
    names = list(ESTIMATORS)
    print(f"{'workload':<14} {'heap':<6} {'traced':>8} {'Δblocks':>9} {'B/block':>8} "
          + " ".join(f"{n:>22}" for n in names))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "items.sqlite"
        _orm_setup(db)  # the table is filled once, outside the measured processes
        for name, n in WORKLOADS:
            for warm in (False, True):
                truth = _child(["error", name, n, warm, True, str(db)])["traced_peak"]
                readings = _child(["error", name, n, warm, False, str(db)])["readings"]
                blocks = _growth(readings, lambda r: r["blocks"])
                cells = []
                for est in names:
                    g = _growth(readings, ESTIMATORS[est])
                    cells.append(f"{g / _MB:>9.1f} ({g / truth:>5.2f}x)".rjust(22))
                print(f"{name + ' ' + str(n):<14} {'warm' if warm else 'fresh':<6} {truth / _MB:>8.1f} "
                      f"{blocks:>9,.0f} {truth / max(blocks, 1):>8.0f} " + " ".join(cells))  # fmt: skip


def request_child(heap: str, requests: int) -> dict[str, Any]:
    """An isolated sampled request (light mode, one in a while: the readings are never shared) against a
    bare one, on a raw ASGI app in this process: median CPU µs of the request path, each alone."""
    from benchmarks.asgi_driver import run_batch
    from benchmarks.middleware import raw_base, raw_memprof
    from memprof import load_settings

    held = _small_objects(int(heap.split("-")[1])) if heap.startswith("pymalloc") else []
    if heap == "imports":
        import fastapi  # noqa: F401
        import sqlalchemy.orm  # noqa: F401
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(mode="light", sample_rate=1.0, data_dir=Path(tmp), log_events=False)
        apps = {"bare": raw_base.make_app(), "sampled": raw_memprof.make_app(settings)}
        for app in apps.values():
            run_batch(loop, app, 200)
        times: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(requests):
            for name, app in apps.items():
                time.sleep(0.01)  # longer than any sharing window: every reading is fresh
                times[name].append(run_batch(loop, app, 1).thread_cpu_ns / 1000)
        apps["sampled"].close()
    loop.close()
    bare, sampled = statistics.median(times["bare"]), statistics.median(times["sampled"])
    blocks = sys.getallocatedblocks()
    del held
    return {"heap": heap, "blocks": blocks, "bare": bare, "sampled": sampled}


def run_request(requests: int = 300) -> None:
    print("an isolated sampled request (light mode) against a bare one, raw ASGI app: CPU µs, medians")
    print(f"{'heap':<14} {'blocks':>11} {'bare':>8} {'sampled':>8} {'overhead':>9}")
    for heap in ("empty", "imports", "pymalloc-100", "pymalloc-400"):
        r = _child(["request", heap, requests])
        print(f"{heap:<14} {r['blocks']:>11,} {r['bare']:>8.1f} {r['sampled']:>8.1f} "
              f"{r['sampled'] - r['bare']:>+9.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", choices=("cost", "error", "request", "all"), default="all")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        if spec[0] == "cost":
            out = cost_child(spec[1])
        elif spec[0] == "request":
            out = request_child(spec[1], int(spec[2]))
        else:
            out = error_child(spec[1], int(spec[2]), bool(spec[3]), bool(spec[4]), Path(spec[5]))
        print(json.dumps(out))
        return
    if args.part in ("cost", "all"):
        run_cost()
    if args.part in ("error", "all"):
        run_error()
    if args.part in ("request", "all"):
        run_request()


if __name__ == "__main__":
    main()

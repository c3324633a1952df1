"""Heap readings beside RSS, through real apps: a request's Python heap on a warm heap (where RSS hides it),
per SQL statement and checkpoint, with tracing, and the request a dump names."""

from __future__ import annotations

import asyncio
import datetime
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Boolean, DateTime, Engine, Float, Integer, String, create_engine, insert, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware, checkpoint, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.heap import SOURCE_BLOCKS, SOURCE_TRACEMALLOC
from memprof.records.models import Dump, Sample

MiB = 1024 * 1024


class Base(DeclarativeBase):
    pass


class Item(Base):
    """Thirteen attributes, like the model of the issue that found RSS blind on a warm heap."""

    __tablename__ = "heap_item"
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


@pytest.fixture(scope="module")
def items_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heap") / "items.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    when = datetime.datetime(2026, 1, 1)
    rows = [
        {
            "id": i,
            "name": f"item {i}",
            "code": f"C{i:06d}",
            "qty": i % 97,
            "owner_id": i % 13,
            "price": i / 7,
            "active": i % 2 == 0,
            "note": "n" * (i % 120),
            "rank": i,
            "state": "open",
            "version": 1,
            "created": when,
            "label": f"label {i % 50}",
        }
        for i in range(1, 30_001)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Item), rows)
    engine.dispose()
    return path


@pytest.fixture
def engine(items_db: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{items_db}")
    yield engine
    engine.dispose()


def items_app(engine: Engine) -> Starlette:
    """``GET /items?n=N``: N ORM objects loaded in a Session and returned as JSON."""

    async def items(request: Request) -> JSONResponse:
        n = int(request.query_params["n"])
        with Session(engine) as session:
            found = session.scalars(select(Item).order_by(Item.id).limit(n)).all()
            body = [{"id": i.id, "name": i.name, "note": i.note, "price": i.price} for i in found]
        return JSONResponse(body)

    return Starlette(routes=[Route("/items", items)])


def _get(client: TestClient, n: int) -> None:
    response = client.get(f"/items?n={n}")
    assert response.status_code == 200 and len(response.json()) == n


def _growth(record: dict[str, Any]) -> int:
    heap = record["memory"]["heap"]
    return int(heap["peak"] - heap["start"])


def test_warm_heap_growth_is_within_2x_of_tracemalloc_and_a_small_request_stays_small(
    engine: Engine, make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    # The truth: tracemalloc's peak for the 20,000-object request in a bare run, after a 30,000-object one.
    with TestClient(items_app(engine)) as bare:
        _get(bare, 30_000)
        tracemalloc.start(1)
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            _get(bare, 20_000)
            traced_peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    # The same requests through memprof, aggressive mode, tracing off.
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(items_app(engine), settings=make_settings(mode="aggressive"))
        with TestClient(app) as client:
            for n in (30_000, 20_000, 10):
                _get(client, n)
    finally:
        uninstrument_sqlalchemy()
    big, warm, small = samples()
    for record in (big, warm, small):
        Sample.model_validate(record)
        assert record["memory"]["heap"]["source"] == SOURCE_BLOCKS
    assert traced_peak > 10 * MiB
    growth = _growth(warm)
    assert traced_peak / 2 <= growth <= traced_peak * 2, (growth / MiB, traced_peak / MiB)
    assert 0 <= _growth(small) < 1 * MiB, _growth(small) / MiB
    # Per statement: the select of 20,000 rows grew the heap by its rows, beside its RSS figure.
    (select_stmt,) = [s for s in warm["queries"]["statements"] if "heap_item" in s["sql"]]
    assert select_stmt["rows"] == 20_000 and select_stmt["heap_delta_max"] > 1 * MiB
    assert select_stmt["heap_after"] - select_stmt["heap_before"] == select_stmt["heap_delta_max"]
    assert "rss_delta_max" in select_stmt
    # The peak is the highest reading: at checkpoints, statement ends and the garbage collections in
    # between (the ORM objects are built after the last row is fetched and freed before response_start).
    heap = warm["memory"]["heap"]
    readings = [cp["heap"] for cp in warm["checkpoints"]] + [select_stmt["heap_after"]]
    assert heap["peak"] >= max(readings) >= max(heap["start"], heap["end"])
    assert heap["peak"] - select_stmt["heap_after"] > 4 * MiB, "the objects built after the fetch count"
    assert warm["checkpoints"][0]["heap"] == heap["start"] and warm["checkpoints"][-1]["heap"] == heap["end"]


def _sample_of_a_span_building_50k_dicts(
    make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> dict[str, Any]:
    """The light-mode sample of one request whose checkpoint span builds 50,000 dicts."""

    async def build(request: Request) -> PlainTextResponse:
        with checkpoint("build"):
            rows = [{"n": i, "text": f"row {i}"} for i in range(50_000)]
        return PlainTextResponse(str(len(rows)))

    app = MemprofMiddleware(
        Starlette(routes=[Route("/build", build)]), settings=make_settings(mode="light", sample_rate=1.0)
    )
    with TestClient(app) as client:
        assert client.get("/build").text == "50000"
    (record,) = samples()
    return record


def test_light_samples_have_heap_figures_and_spans_their_heap_before(
    make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    record = _sample_of_a_span_building_50k_dicts(make_settings, samples)
    Sample.model_validate(record)
    assert record["detail"] == "checkpoints"
    span = {cp["name"]: cp for cp in record["checkpoints"]}["build"]
    assert span["heap"] - span["heap_before"] > 4 * MiB, "50,000 dicts built inside the span"
    assert _growth(record) >= span["heap"] - record["memory"]["heap"]["start"]


def test_with_tracing_on_the_heap_is_traced_bytes_and_a_switch_mid_request_drops_it(
    make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    async def build(request: Request) -> PlainTextResponse:
        if request.query_params.get("switch"):
            tracemalloc.stop()
        kept = [bytes(1000) for _ in range(5_000)]
        checkpoint.mark("built")
        return PlainTextResponse(str(len(kept)))

    app = MemprofMiddleware(Starlette(routes=[Route("/", build)]), settings=make_settings(tracemalloc=1))
    tracemalloc.start(1)
    try:
        with TestClient(app) as client:
            assert client.get("/").status_code == 200
            assert client.get("/?switch=1").status_code == 200
    finally:
        tracemalloc.stop()
    traced, switched = samples()
    assert traced["memory"]["heap"]["source"] == SOURCE_TRACEMALLOC
    assert _growth(traced) >= 5_000 * 1000, "exact bytes: the 1000-byte objects count in full"
    assert switched["memory"]["heap"] is None, "tracing stopped during the request: no mixed figures"
    Sample.model_validate(switched)


def test_a_reading_is_never_reused_across_a_tracing_switch_nor_for_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shared reading from before tracing started is in the other source's units: the next reading is
    fresh (a request that began just after would otherwise mix an estimate with traced bytes). A reading
    that looked slow (the thread was preempted mid-walk) is shared for 20 ms at most."""
    from memprof import heap

    assert not tracemalloc.is_tracing()
    now = time.perf_counter_ns()
    monkeypatch.setattr(heap, "_last", heap._NEVER)
    heap.heap_at(now)
    assert heap.heap_source() == SOURCE_BLOCKS
    tracemalloc.start(1)
    try:
        heap.heap_at(now + 1)  # within the sharing window, but tracing started since
        assert heap.heap_source() == SOURCE_TRACEMALLOC
    finally:
        tracemalloc.stop()
    heap.heap_at(now + 2)
    assert heap.heap_source() == SOURCE_BLOCKS
    ticks = iter([0, 10**9])  # one reading that "took" a second
    monkeypatch.setattr(heap, "_perf", lambda: next(ticks))
    heap.heap_at(now + 10**9)
    assert heap._last[2] == heap.MAX_SHARE_NS


def test_a_dump_names_the_request_whose_heap_grew_most(make_settings: Callable[..., Any]) -> None:
    release = asyncio.Event()
    started = {"small": asyncio.Event(), "big": asyncio.Event()}

    async def small(request: Request) -> PlainTextResponse:
        checkpoint.mark("waiting")
        started["small"].set()
        await release.wait()
        return PlainTextResponse("small")

    async def big(request: Request) -> PlainTextResponse:
        held = [(i, f"value {i}") for i in range(200_000)]
        checkpoint.mark("built")
        started["big"].set()
        await release.wait()
        return PlainTextResponse(str(len(held)))

    app = MemprofMiddleware(
        Starlette(routes=[Route("/small", small), Route("/big", big)]),
        settings=make_settings(watchdog_interval_ms=0),
    )

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = asyncio.create_task(client.get("/small"))  # the longest-running one
            await started["small"].wait()
            second = asyncio.create_task(client.get("/big"))
            await started["big"].wait()
            path = memprof.dump("costliest")  # outside both requests: memprof picks one
            release.set()
            await asyncio.gather(first, second)
        assert path is not None
        return Dump.model_validate_json(Path(path).read_text()).model_dump(by_alias=True)

    try:
        record = asyncio.run(scenario())
    finally:
        app.close()
    assert record["request"]["path"] == "/big"
    assert record["request"]["heap_growth"] > 8 * MiB
    by_path = {r["path"]: r for r in record["inflight"]}
    assert by_path["/small"]["heap_growth"] < by_path["/big"]["heap_growth"]
    assert record["memory"]["heap"] > 0 and record["memory"]["heap_source"] == SOURCE_BLOCKS


def test_records_of_1_0_without_heap_figures_still_load(
    make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    from memprof.records.models import parse_record

    app = MemprofMiddleware(Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))]),
                            settings=make_settings(mode="light", sample_rate=1.0))  # fmt: skip
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    (record,) = samples()
    assert record["version"] == "1.1"
    old = {**record, "version": "1.0", "memory": dict(record["memory"])}
    del old["memory"]["heap"]
    old["checkpoints"] = [{k: v for k, v in cp.items() if k != "heap"} for cp in record["checkpoints"]]
    parsed = parse_record(old)
    assert isinstance(parsed, Sample) and parsed.memory.heap is None
    assert all(cp.heap is None for cp in parsed.checkpoints)


def test_a_span_never_reads_its_own_start_even_when_readings_are_shared_long(
    make_settings: Callable[..., Any],
    samples: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a busy host a reading can cost a millisecond, and readings are shared over 50 times their cost:
    a span's end must still read the heap afresh (here every reading would otherwise be shared for ages)."""
    import memprof.heap as heap_mod

    monkeypatch.setattr(heap_mod, "SHARE_FACTOR", 10**9)
    record = _sample_of_a_span_building_50k_dicts(make_settings, samples)
    span = {cp["name"]: cp for cp in record["checkpoints"]}["build"]
    assert span["heap"] - span["heap_before"] > 4 * MiB

"""Cache state observed over time: lru_caches of modules loaded at any time, providers, shutdown."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware
from memprof.records.models import StateRecord
from memprof.watchdog.state import snapshot, unregister_state
from memprof.watchdog.thread import EARLY_STATE_S, _Group
from tests._memprof_server import wait_for

MODULE = textwrap.dedent(
    """
    import functools

    @functools.lru_cache(maxsize=None)
    def unbounded(x):
        return [x] * 10

    @functools.lru_cache(maxsize=8)
    def bounded(x):
        return x

    class Prices:
        @staticmethod
        @functools.lru_cache(maxsize=100)
        def lookup(sku):
            return sku
    """
)


@pytest.fixture
def cached_module(tmp_path: Path) -> Iterator[Any]:
    name = f"memprof_state_mod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def _lines(data_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(data_dir.glob("state-*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def _sizes(line: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c for c in line["caches"]}


def test_caches_observed_at_startup_periodically_and_at_shutdown(
    make_settings: Callable[..., Any], data_dir: Path, tmp_path: Path, cached_module: Any
) -> None:
    orders: list[int] = []
    memprof.register_state("orders", lambda: orders)
    try:
        app = MemprofMiddleware(
            Starlette(), settings=make_settings(watchdog_interval_ms=20, state_interval_s=0.1)
        )
        with TestClient(app):
            name = cached_module.__name__
            wait_for(lambda: _lines(data_dir))  # the start-up observation
            for i in range(30):
                cached_module.unbounded(i)
                cached_module.bounded(i)
                cached_module.Prices.lookup(i)
            orders.extend(range(7))

            def grown() -> bool:
                lines = _lines(data_dir)
                return any(
                    line["phase"] == "periodic"
                    and _sizes(line).get(f"{name}.unbounded", {}).get("size") == 30
                    for line in lines
                )

            wait_for(grown)
            for i in range(30, 50):
                cached_module.unbounded(i)
        lines = _lines(data_dir)
    finally:
        unregister_state("orders")
    for line in lines:
        StateRecord.model_validate(line)
    phases = [line["phase"] for line in lines]
    assert phases[0] == "startup" and phases[-1] == "shutdown" and "periodic" in phases
    last = _sizes(lines[-1])
    unbounded = dict(last[f"{name}.unbounded"])
    held = unbounded.pop("bytes_estimate")
    assert unbounded == {
        "name": f"{name}.unbounded",
        "kind": "lru_cache",
        "size": 50,
        "maxsize": None,
        "unbounded": True,
    }
    assert 50 * sys.getsizeof([0] * 10) < held < 50 * 400, "50 lists of 10 ints and their keys"
    assert last[f"{name}.bounded"]["size"] == 8 and last[f"{name}.bounded"]["unbounded"] is False
    assert last[f"{name}.Prices.lookup"]["maxsize"] == 100
    assert last["orders"]["kind"] == "provider" and last["orders"]["size"] == 7
    # bytes held: a bounded cache's entries are sized too; a list a provider returns is sampled
    assert 8 * sys.getsizeof(10**6) <= last[f"{name}.bounded"]["bytes_estimate"] < 8 * 400
    assert last["orders"]["bytes_estimate"] >= sys.getsizeof(orders)
    # Growth is visible over time: the unbounded cache's sizes never shrink and end higher.
    series = [
        _sizes(line)[f"{name}.unbounded"]["size"] for line in lines if f"{name}.unbounded" in _sizes(line)
    ]
    assert series == sorted(series) and series[-1] > series[0]
    assert lines[-1]["pid"] > 0 and lines[-1]["worker"].endswith(f":{lines[-1]['pid']}")


def test_providers_return_ints_mappings_or_sized(cached_module: Any) -> None:
    memprof.register_state("count", lambda: 3)
    memprof.register_state("bounded", lambda: {"size": 4, "maxsize": 10})
    try:
        caches = {c["name"]: c for c in snapshot()}
    finally:
        unregister_state("count")
        unregister_state("bounded")
    assert caches["count"]["size"] == 3 and caches["count"]["unbounded"] is True
    assert caches["bounded"]["maxsize"] == 10 and caches["bounded"]["unbounded"] is False
    with pytest.raises(TypeError, match="must be callable"):
        memprof.register_state("bad", 42)  # type: ignore[arg-type]


@pytest.mark.internal_errors_expected
def test_a_failing_provider_is_an_internal_error_not_an_app_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from memprof.safety.isolation import errors

    monkeypatch.setattr(errors, "raise_errors", False)

    def broken() -> int:
        raise RuntimeError("provider down")

    memprof.register_state("broken", broken)
    try:
        names = [c["name"] for c in snapshot()]
    finally:
        unregister_state("broken")
    assert "broken" not in names and errors.counts["state_provider:broken"] == 1


def test_identity_maps_of_live_orm_sessions(tmp_path: Path) -> None:
    from sqlalchemy import Column, Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        id = Column(Integer, primary_key=True)
        name = Column(String(50))

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Item(id=i, name=f"n{i}") for i in range(120)])
        session.commit()
    with Session(engine) as session:
        items = session.query(Item).all()
        maps = [c for c in snapshot() if c["kind"] == "identity_map"]
        assert len(items) == 120
    assert [(c["size"], c["unbounded"]) for c in maps] == [(120, True)]
    assert maps[0]["name"] == "Session identity map #1"
    assert not [c for c in snapshot() if c["kind"] == "identity_map"], "closed sessions are gone"
    engine.dispose()


def test_compiled_caches_of_instrumented_engines(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    memprof.instrument_sqlalchemy(engine)
    try:
        with engine.connect() as conn:
            for i in range(5):
                conn.execute(text(f"select {i}"))
        compiled = [c for c in snapshot() if c["kind"] == "sqlalchemy_compiled"]
    finally:
        memprof.uninstrument_sqlalchemy()
        engine.dispose()
    (cache,) = [c for c in compiled if "c.sqlite" in c["name"]]
    assert cache["size"] >= 1 and cache["maxsize"] and cache["unbounded"] is False


GROWING_MODULE = textwrap.dedent(
    """
    import functools

    @functools.lru_cache(maxsize=None)
    def report(n):
        return "r" * 46_000 + str(n)  # ~46 KB per entry
    """
)


def test_an_empty_lru_cache_that_fills_is_seen_from_size_zero_with_its_bytes(
    make_settings: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    name = f"memprof_growing_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(GROWING_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)

        async def report(request: Request) -> PlainTextResponse:
            return PlainTextResponse(module.report(int(request.path_params["n"]))[:10])

        app = MemprofMiddleware(
            Starlette(routes=[Route("/reports/{n}", report)]),
            settings=make_settings(mode="light", sample_rate=0.0, watchdog_interval_ms=20),
        )
        with TestClient(app) as client:
            wait_for(lambda: _lines(data_dir))  # the start-up observation, cache still empty
            for n in range(300):
                assert client.get(f"/reports/{n}").status_code == 200
        lines = _lines(data_dir)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    series = [_sizes(line)[f"{name}.report"] for line in lines]
    assert (series[0]["size"], series[0]["bytes_estimate"]) == (0, 0), "observed while still empty"
    assert lines[-1]["phase"] == "shutdown" and series[-1]["size"] == 300
    assert 0.8 * 300 * 46_000 < series[-1]["bytes_estimate"] < 1.25 * 300 * 46_000


def test_cache_state_is_observed_early_in_a_worker_life_then_every_interval() -> None:
    group = _Group.__new__(_Group)  # only the schedule: no files
    group.created = group.last_state = 1000.0
    group.early = list(EARLY_STATE_S)
    due = [t for t in range(0, 700) if group.state_due(1000.0 + t, 300.0)]
    assert due == [10, 30, 60, 360, 660]


def test_each_dump_adds_its_cache_observation_to_the_state_log(
    make_settings: Callable[..., Any], data_dir: Path, cached_module: Any
) -> None:
    app = MemprofMiddleware(Starlette(), settings=make_settings(watchdog_interval_ms=20))
    with TestClient(app):
        wait_for(lambda: _lines(data_dir))
        cached_module.unbounded(1)
        path = memprof.dump("state-check")
        assert path is not None
        at_dump = [line for line in _lines(data_dir) if line["phase"] == "dump"]
    assert len(at_dump) == 1
    StateRecord.model_validate(at_dump[0])
    dumped = json.loads(Path(path).read_text())
    assert at_dump[0]["caches"] == dumped["caches"]
    assert _sizes(at_dump[0])[f"{cached_module.__name__}.unbounded"]["size"] == 1

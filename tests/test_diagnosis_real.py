"""The diagnosis end to end, as a user gets it: real apps served through MemprofMiddleware (aggressive
mode), their records analyzed by `memprof analyze --json`, and the top finding checked against the cause
planted in the app: an N+1 made by a service loop over a repository helper, a leak of about 50 KB per
request, and memory that follows the account requested; a healthy CRUD app gets no warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from tests.cli import run_cli
from tests.shop import service


def analyze(data_dir: Path) -> dict[str, Any]:
    assert memprof.flush(10.0)
    result = run_cli("analyze", str(data_dir), "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)


def warnings(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in summary["findings"] if f["severity"] in ("warning", "critical")]


def test_an_n_plus_one_in_a_service_loop_is_one_finding_at_the_loop_with_a_batching_fix(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path
) -> None:
    db = tmp_path / "shop.db"
    engine = create_engine(f"sqlite:///{db}")
    service.Base.metadata.create_all(engine)
    with Session(engine) as session:
        service.seed(session)
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(service.make_app(sessionmaker(engine)), settings=make_settings())
        with TestClient(app) as client:
            for _ in range(10):
                assert client.get("/rename").status_code == 200
    finally:
        uninstrument_sqlalchemy()
    (finding,) = [f for f in analyze(data_dir)["findings"] if f["kind"] == "n_plus_one"]
    loop_line = next(
        n
        for n, text in enumerate(Path(service.__file__).read_text().splitlines(), 1)
        if text.endswith("# LOOP: rename_all")
    )
    text = json.dumps(finding)
    assert f"service.py:{loop_line} in rename_all" in finding["title"], finding["title"]
    assert "repository.py" not in finding["title"]
    assert "IN" in finding["fix"] and "selectinload" not in finding["fix"].split(".")[0], finding["fix"]
    assert "/rename" in text


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "diag_item"
    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[int] = mapped_column()
    name: Mapped[str] = mapped_column(String(40))


def _items_app(tmp_path: Path) -> tuple[Starlette, Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'items.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Item(account=1, name=f"big {i}") for i in range(8000))
        for account in range(2, 12):
            session.add_all(Item(account=account, name=f"small {i}") for i in range(10))
        session.commit()
    maker = sessionmaker(engine)
    kept: list[Any] = []

    def account(request: Request) -> JSONResponse:
        with maker() as session:
            rows = session.scalars(select(Item).where(Item.account == int(request.path_params["n"]))).all()
            return JSONResponse({"items": len(rows), "names": [r.name for r in rows][:5]})

    def report(request: Request) -> JSONResponse:  # keeps each response's document: a leak
        document = {"rows": [{"id": i, "label": f"row {i}", "tags": [i, i + 1]} for i in range(300)]}
        kept.append(document)
        return JSONResponse({"rows": len(document["rows"])})

    def health(request: Request) -> JSONResponse:
        with maker() as session:
            return JSONResponse({"one": session.get(Item, 1) is not None})

    app = Starlette(
        routes=[Route("/accounts/{n}", account), Route("/report", report), Route("/health", health)]
    )
    return app, engine


@pytest.mark.slow
def test_memory_that_follows_the_account_is_named_with_its_variable(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path
) -> None:
    app, engine = _items_app(tmp_path)
    instrument_sqlalchemy(engine)
    try:
        with TestClient(MemprofMiddleware(app, settings=make_settings())) as client:
            for i in range(60):
                assert client.get(f"/accounts/{1 if i % 10 == 0 else 2 + i % 10}").status_code == 200
    finally:
        uninstrument_sqlalchemy()
    found = warnings(analyze(data_dir))
    assert found, "no finding for a route whose memory follows the account"
    top = found[0]
    assert top["kind"] in ("state_dependent_variance", "large_result_set"), top
    assert "/accounts/{n}" in json.dumps(top)


@pytest.mark.slow
def test_a_leak_of_about_50_kb_per_request_is_the_top_finding(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path
) -> None:
    app, _engine = _items_app(tmp_path)
    with TestClient(MemprofMiddleware(app, settings=make_settings())) as client:
        for _ in range(200):
            assert client.get("/report").status_code == 200
    summary = analyze(data_dir)
    found = warnings(summary)
    assert found and found[0]["kind"] == "leak", [f["title"] for f in summary["findings"]]
    assert "/report" in json.dumps(found[0])


@pytest.mark.slow
def test_a_healthy_crud_app_gets_no_warning(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path
) -> None:
    app, engine = _items_app(tmp_path)
    instrument_sqlalchemy(engine)
    try:
        with TestClient(MemprofMiddleware(app, settings=make_settings())) as client:
            for _ in range(200):
                assert client.get("/health").status_code == 200
    finally:
        uninstrument_sqlalchemy()
    summary = analyze(data_dir)
    assert warnings(summary) == [], [f["title"] for f in summary["findings"]]


@pytest.mark.slow
def test_an_lru_cache_growing_from_empty_is_named_with_the_memory_it_holds(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    from tests import diag_cache

    diag_cache.render.cache_clear()
    app = Starlette(routes=[Route("/render/{n}", diag_cache.page)])
    settings = make_settings(watchdog_interval_ms=20, state_interval_s=3600)
    with TestClient(MemprofMiddleware(app, settings=settings)) as client:
        for n in range(300):
            assert client.get(f"/render/{n}").status_code == 200
    summary = analyze(data_dir)
    caches = [f for f in warnings(summary) if f["kind"] == "unbounded_cache"]
    assert caches, [f["title"] for f in summary["findings"]]
    assert "tests.diag_cache.render" in caches[0]["title"] and "MiB" in caches[0]["title"], caches[0]["title"]

"""SQLAlchemy: AsyncSession on aiosqlite, concurrent requests (async and in the threadpool), several
engines at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.integrations.sqlalchemy import engine_states
from memprof.records.models import Sample
from tests.sqla_apps import Schema, async_app, make_schema, seed, sync_app
from tests.sqla_support import Settings, engine, run, schema, statement

__all__ = ["engine", "schema"]  # fixtures


def test_async_session_on_aiosqlite(
    tmp_path: Path, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    db = tmp_path / "async.db"
    sync = create_engine(f"sqlite:///{db}")
    schema.Base.metadata.create_all(sync)
    with Session(sync) as session:
        seed(session, schema)
    sync.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(async_app(schema, async_sessionmaker(engine)), settings=make_settings())

        async def main() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                assert (await client.get("/n1")).json() == {"authors": 12, "books": 60}
                assert (await client.get("/books")).json() == {"books": 60}
                assert (await client.get("/books/streamed")).json() == {"books": 60}
            await engine.dispose()

        anyio.run(main)
    finally:
        uninstrument_sqlalchemy()
    n1, books, streamed = samples()
    assert statement(streamed, f"FROM {schema.prefix}_book")["rows"] == 60
    assert statement(streamed, f"FROM {schema.prefix}_book")["instances"] == 60
    lazy = statement(n1, f"FROM {schema.prefix}_book")
    assert lazy["count"] == 12 and lazy["n_plus_one"] and lazy["lazy"] and lazy["rows"] == 60
    assert lazy["frame"].startswith("tests/sqla_apps.py:") and lazy["frame"].endswith(" in n_plus_one")
    assert statement(books, f"FROM {schema.prefix}_book")["instances"] == 60
    assert n1["engines"][0]["name"].startswith("sqlite+aiosqlite:")


def test_concurrent_async_requests_keep_their_own_queries(
    tmp_path: Path, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    db = tmp_path / "concurrent.db"
    sync = create_engine(f"sqlite:///{db}")
    schema.Base.metadata.create_all(sync)
    with Session(sync) as session:
        seed(session, schema)
    sync.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(async_app(schema, async_sessionmaker(engine)), settings=make_settings())

        async def main() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                paths = ["/n1", "/books"] * 4
                responses = await asyncio.gather(*(client.get(p) for p in paths))
                assert all(r.status_code == 200 for r in responses)
            await engine.dispose()

        anyio.run(main)
    finally:
        uninstrument_sqlalchemy()
    records = samples()
    assert len(records) == 8
    for rec in records:
        Sample.model_validate(rec)
        if rec["request"]["path"] == "/n1":
            assert rec["queries"]["count"] == 13 and len(rec["queries"]["statements"]) == 2
        else:
            assert rec["queries"]["count"] == 1 and rec["queries"]["statements"][0]["rows"] == 60
    assert any(rec["memory"]["concurrency"]["max"] > 1 for rec in records)


def test_concurrent_sync_requests_in_the_threadpool_keep_their_own_queries(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    app = MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = await asyncio.gather(*(client.get(p) for p in ["/n1", "/users/1", "/joined"] * 3))
            assert all(r.status_code == 200 for r in responses)

    anyio.run(main)
    counts = {"/n1": 13, "/users/1": 1, "/joined": 1}
    records = samples()
    assert len(records) == 9
    for rec in records:
        assert rec["queries"]["count"] == counts[rec["request"]["path"]], rec["request"]["path"]


def test_every_engine_and_several_at_once(tmp_path: Path, make_settings: Settings, samples: Any) -> None:
    first, second = make_schema(), make_schema()
    engines = []
    for i, sch in enumerate((first, second)):
        eng = create_engine(f"sqlite:///{tmp_path / f'db{i}.db'}")
        sch.Base.metadata.create_all(eng)
        with Session(eng) as session:
            seed(session, sch, authors=2)
        engines.append(eng)
    instrument_sqlalchemy()  # no argument: every engine, including ones created later
    try:
        app = sync_app(first, sessionmaker(engines[0]))

        @app.get("/both")
        def both() -> dict[str, int]:
            with Session(engines[0]) as one, Session(engines[1]) as two:
                a = one.execute(text(f"SELECT count(*) FROM {first.prefix}_book")).scalar_one()
                b = two.execute(text(f"SELECT count(*) FROM {second.prefix}_book")).scalar_one()
            return {"books": a + b}

        run(app, make_settings(), "/users/1", "/both")
    finally:
        uninstrument_sqlalchemy()
        for eng in engines:
            eng.dispose()
    one, two = samples()
    assert one["queries"]["count"] == 1 and len(one["engines"]) == 1
    assert two["queries"]["count"] == 2 and len(two["engines"]) == 2
    assert {e["name"] for e in two["engines"]} <= {e["name"] for e in engine_states()}

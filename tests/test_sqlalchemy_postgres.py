"""SQLAlchemy instrumentation on a real PostgreSQL: psycopg 3 (sync, threadpool) and asyncpg.

Tables get a unique prefix per test (see tests/sqla_apps.py) so parallel runs never collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.records.models import Sample
from tests.conftest import IN_CI
from tests.datadir import written_files
from tests.sqla_apps import SECRET_PASSWORD, SECRET_TOKEN, Schema, async_app, make_schema, seed, sync_app

pytestmark = pytest.mark.postgres

URL = os.environ.get("MEMPROF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _sync_url() -> str:
    return make_url(URL).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _async_url() -> str:
    return make_url(URL).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[Engine, Schema]]:
    engine = create_engine(_sync_url())
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL is not reachable at {_sync_url()}: {exc.orig}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    schema = make_schema()
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema)
    try:
        yield engine, schema
    finally:
        uninstrument_sqlalchemy()
        schema.Base.metadata.drop_all(engine)
        engine.dispose()


def statement(rec: dict[str, Any], contains: str) -> dict[str, Any]:
    found = [s for s in rec["queries"]["statements"] if contains in s["sql"]]
    assert len(found) == 1, [s["sql"] for s in rec["queries"]["statements"]]
    return found[0]


def test_psycopg_sync_endpoints(
    pg: tuple[Engine, Schema], make_settings: Callable[..., Any], samples: Any, data_dir: Path
) -> None:
    engine, schema = pg
    instrument_sqlalchemy(engine)
    app = MemprofMiddleware(
        sync_app(schema, sessionmaker(engine)), settings=make_settings(record_sql_params=True)
    )
    with TestClient(app) as client:
        assert client.get("/n1").json() == {"authors": 12, "books": 60}
        assert client.get("/joined").json() == {"authors": 12}
        assert client.get("/books/streamed").json() == {"books": 60}
        assert client.get("/login").json() == {"ok": True}
        assert client.post("/write").json() == {"ok": 1}
    n1, joined, streamed, login, write = samples()
    for rec in (n1, joined, streamed, login, write):
        Sample.model_validate(rec)
    lazy = statement(n1, f"FROM {schema.prefix}_book")
    assert lazy["count"] == 12 and lazy["n_plus_one"] and lazy["lazy"] and lazy["rows"] == 60
    assert lazy["frame"].startswith("tests/sqla_apps.py:") and "%(param_1)s" in lazy["sql"]
    (stmt,) = joined["queries"]["statements"]
    assert stmt["rows"] == 240 and stmt["instances"] == 120
    assert statement(streamed, f"FROM {schema.prefix}_book")["rows"] == 60
    users = {k: v for k, v in write["models"]["classes"].items() if k.endswith(".User")}
    ((_, user),) = users.items()
    assert (user["created"], user["updated"], user["deleted"]) == (3, 1, 1)
    (eng,) = n1["engines"]
    assert eng["name"] == f"postgresql+psycopg:{make_url(URL).database}" and eng["pool_checked_out"] == 0
    assert eng["pool_size"] == 5
    for content in written_files(data_dir).values():
        assert SECRET_PASSWORD.encode() not in content and SECRET_TOKEN.encode() not in content


def test_asyncpg_async_session(
    pg: tuple[Engine, Schema], make_settings: Callable[..., Any], samples: Any
) -> None:
    _sync_engine, schema = pg
    engine = create_async_engine(_async_url())
    instrument_sqlalchemy(engine)
    app = MemprofMiddleware(async_app(schema, async_sessionmaker(engine)), settings=make_settings())

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/n1")).json() == {"authors": 12, "books": 60}
            assert (await client.get("/books")).json() == {"books": 60}
            assert (await client.get("/books/streamed")).json() == {"books": 60}
        await engine.dispose()

    anyio.run(main)
    n1, books, streamed = samples()
    assert statement(streamed, f"FROM {schema.prefix}_book")["rows"] == 60
    assert statement(streamed, f"FROM {schema.prefix}_book")["instances"] == 60
    lazy = statement(n1, f"FROM {schema.prefix}_book")
    assert lazy["count"] == 12 and lazy["n_plus_one"] and lazy["lazy"] and lazy["rows"] == 60
    assert lazy["frame"].startswith("tests/sqla_apps.py:") and lazy["frame"].endswith(" in n_plus_one")
    stmt = statement(books, f"FROM {schema.prefix}_book")
    assert stmt["rows"] == 60 and stmt["instances"] == 60
    assert n1["engines"][0]["name"].startswith("postgresql+asyncpg:")

"""SQLAlchemy instrumentation through real FastAPI apps on real SQLite (pysqlite and aiosqlite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.integrations.sqlalchemy import engine_states, reset_unattributed, unattributed
from memprof.schema import Sample
from tests.sqla_apps import (
    Schema,
    async_app,
    criteria_session_class,
    make_schema,
    seed,
    sync_app,
)

Settings = Callable[..., Any]


@pytest.fixture
def schema() -> Schema:
    return make_schema()


@pytest.fixture
def engine(tmp_path: Path, schema: Schema) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema)
    instrument_sqlalchemy(engine)
    yield engine
    uninstrument_sqlalchemy()
    engine.dispose()


def run(app: Any, settings: Any, *paths: str, method: str = "GET") -> None:
    with TestClient(MemprofMiddleware(app, settings=settings)) as client:
        for path in paths:
            assert client.request(method, path).status_code == 200


def only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    Sample.model_validate(records[0])
    return records[0]


def statement(rec: dict[str, Any], contains: str) -> dict[str, Any]:
    found = [s for s in rec["queries"]["statements"] if contains in s["sql"]]
    assert len(found) == 1, [s["sql"] for s in rec["queries"]["statements"]]
    return found[0]


def model(rec: dict[str, Any], name: str) -> dict[str, Any]:
    found = {k: v for k, v in rec["models"]["classes"].items() if k.endswith(f".{name}")}
    assert len(found) == 1, rec["models"]
    return next(iter(found.values()))


def test_n_plus_one_from_lazy_relationship(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    run(sync_app(schema, sessionmaker(engine)), make_settings(), "/n1")
    rec = only(samples())
    queries = rec["queries"]
    assert queries["count"] == 13 and queries["total_ms"] > 0
    lazy = statement(rec, f"FROM {schema.prefix}_book")
    assert lazy["count"] == 12 and lazy["n_plus_one"] and lazy["lazy"]
    assert lazy["rows"] == 60 and lazy["instances"] == 60
    assert lazy["frame"].startswith("tests/sqla_apps.py:") and lazy["frame"].endswith(" in n_plus_one")
    assert (
        "len(author.books)"
        in Path("tests/sqla_apps.py")
        .read_text()
        .splitlines()[int(lazy["frame"].split(":")[1].split()[0]) - 1]
    )
    assert "?" in lazy["sql"] and "= 1" not in lazy["sql"]
    parent = statement(rec, f"FROM {schema.prefix}_author")
    assert parent["count"] == 1 and not parent["n_plus_one"] and not parent["lazy"]
    assert [s["sql"] for s in queries["n_plus_one"]] == [lazy["sql"]]
    assert model(rec, "Author")["loaded"] == 12 and model(rec, "Book")["loaded"] == 60
    assert rec["models"]["identity_maps"] and max(rec["models"]["identity_maps"]) > 12
    (eng,) = rec["engines"]
    assert eng["name"].startswith("sqlite:") and eng["compiled_cache"] >= 2 and eng["pool_checked_out"] == 0


def test_threshold_from_settings(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    run(sync_app(schema, sessionmaker(engine)), make_settings(n_plus_one_threshold=13), "/n1")
    rec = only(samples())
    assert not statement(rec, f"FROM {schema.prefix}_book")["n_plus_one"]
    assert rec["queries"]["n_plus_one"] == []


def test_each_middleware_uses_its_own_settings(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    strict = MemprofMiddleware(
        sync_app(schema, sessionmaker(engine)), settings=make_settings(n_plus_one_threshold=13)
    )
    newer = MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())
    with TestClient(strict) as first, TestClient(newer) as second:
        assert first.get("/n1").status_code == 200
        assert second.get("/n1").status_code == 200
    flagged = [bool(rec["queries"]["n_plus_one"]) for rec in samples()]
    assert sorted(flagged) == [False, True]


def test_joinedload_cartesian_rows(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    run(sync_app(schema, sessionmaker(engine)), make_settings(), "/joined")
    rec = only(samples())
    (stmt,) = rec["queries"]["statements"]
    # 12 authors x 5 books x 4 awards rows for 12 + 60 + 48 objects
    assert stmt["rows"] == 240 and stmt["instances"] == 120
    assert model(rec, "Award")["loaded"] == 48


def test_large_result_set_plain_and_streamed(
    tmp_path: Path, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'big.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=40, books=50, awards=0)
    instrument_sqlalchemy(engine)
    try:
        run(sync_app(schema, sessionmaker(engine)), make_settings(), "/books", "/books/streamed")
    finally:
        uninstrument_sqlalchemy()
        engine.dispose()
    plain, streamed = samples()
    for rec in (plain, streamed):
        Sample.model_validate(rec)
        (stmt,) = rec["queries"]["statements"]
        assert stmt["rows"] == 2000 and stmt["instances"] == 2000
        assert stmt["rss_after"] >= stmt["rss_before"] > 0 and stmt["rss_delta_max"] >= 0
        book = model(rec, "Book")
        assert book["loaded"] == 2000 and book["rss_last"] >= book["rss_first"] > 0


@pytest.mark.parametrize("use_lambda", [True, False])
def test_loader_criteria_from_do_orm_execute_hook(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any, use_lambda: bool
) -> None:
    careless = sessionmaker(engine, class_=criteria_session_class(schema, False, use_lambda))
    careful = sessionmaker(engine, class_=criteria_session_class(schema, True, use_lambda))
    settings = make_settings()
    run(sync_app(schema, careless), settings, "/n1")
    run(sync_app(schema, careful), settings, "/n1")
    bad, good = samples()
    for rec, duplicates in ((bad, 12), (good, 0)):
        Sample.model_validate(rec)
        ((name, (crit,)),) = rec["scopes"]["classes"].items()
        assert name.endswith(".Book")
        assert crit["kind"] == ("lambda" if use_lambda else "expression")
        assert crit["duplicates"] == duplicates
        if use_lambda:
            assert crit["where"] == f"tests/sqla_apps.py:{crit['where'].rsplit(':', 1)[1]}"
            assert "cls.deleted.is_(False)" in crit["criteria"]
        else:
            assert crit["where"] is None and "deleted" in crit["criteria"]
        # applied to the parent query and to each of the 12 lazy loads (twice each when careless)
        assert crit["applied"] == 13 + duplicates
        assert len(crit["statements"]) == 2
    # the deleted books (one in five) are hidden: 48 rows instead of 60
    assert statement(good, f"FROM {schema.prefix}_book")["rows"] == 48


def test_created_updated_deleted(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    run(sync_app(schema, sessionmaker(engine)), make_settings(), "/write", method="POST")
    user = model(only(samples()), "User")
    assert (user["created"], user["updated"], user["deleted"]) == (3, 1, 1)
    assert user["loaded"] >= 1


def test_sql_error_closes_execution_state(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    with TestClient(
        MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())
    ) as client:
        assert client.get("/bad-sql").json() == {"error": "OperationalError"}
    stmt = statement(only(samples()), "no_such_table")
    assert stmt["count"] == 1 and stmt["rows"] == 0


def test_statements_are_capped(engine: Engine, make_settings: Settings, samples: Any) -> None:
    long_sql = "SELECT 1 AS " + "x" * 3000

    async def many(scope: Any, receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            conn.execute(text(long_sql)).scalar_one()
            for i in range(250):
                conn.execute(text(f"SELECT {i} AS n_{i}")).scalar_one()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert TestClient(MemprofMiddleware(many, settings=make_settings())).get("/").status_code == 200
    queries = only(samples())["queries"]
    assert queries["count"] == 251 and len(queries["statements"]) == 200
    assert queries["dropped_statements"] == 51
    first = queries["statements"][0]["sql"]
    assert first.startswith("SELECT 1 AS xxx") and len(first) == 2003 and first.endswith("...")


def test_compiled_cache_growth_shows_across_identical_requests(
    engine: Engine, make_settings: Settings, samples: Any
) -> None:
    calls = iter(range(1000))

    async def literal_per_call(scope: Any, receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            # A statement built with its value inline: a new compiled-cache entry on every request.
            conn.execute(text(f"SELECT {next(calls)} AS n")).scalar_one()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(MemprofMiddleware(literal_per_call, settings=make_settings()))
    for _ in range(4):
        assert client.get("/").status_code == 200
    sizes = [rec["engines"][0]["compiled_cache"] for rec in samples()]
    assert sizes == sorted(sizes) and sizes[-1] - sizes[0] == 3, sizes
    assert {e["name"] for e in engine_states()} >= {rec["engines"][0]["name"] for rec in samples()}


def test_light_profile_has_count_and_time_only(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    run(sync_app(schema, sessionmaker(engine)), make_settings(mode="light", sample_rate=1.0), "/n1")
    rec = only(samples())
    assert rec["detail"] == "checkpoints"
    assert set(rec["queries"]) == {"count", "total_ms"} and rec["queries"]["count"] == 13
    assert rec.get("models") is None and rec.get("scopes") is None and rec.get("engines") is None


def test_unattributed_sql_is_never_charged_to_a_request(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any
) -> None:
    reset_unattributed()
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("SELECT 1")).all()
    outside = unattributed()
    assert outside["count"] == 3 and outside["total_ms"] > 0
    assert outside["statements"][0] == {**outside["statements"][0], "sql": "SELECT 1", "count": 3}
    run(sync_app(schema, sessionmaker(engine)), make_settings(), "/users/1")
    assert only(samples())["queries"]["count"] == 1
    assert unattributed()["count"] == 3


@pytest.mark.parametrize("record_params", [False, True])
def test_secrets_never_reach_the_data_dir(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any, data_dir: Path, record_params: bool
) -> None:
    from tests.sqla_apps import SECRET_PASSWORD, SECRET_TOKEN

    settings = make_settings(record_sql_params=record_params)
    run(sync_app(schema, sessionmaker(engine)), settings, "/login", "/users/1")
    login, lookup = samples()
    stmt = statement(login, "WHERE")
    if record_params:
        assert stmt["params"] and all(v == "[REDACTED]" for v in stmt["params"][0].values())
        assert statement(lookup, "WHERE")["params"] == [{"pk_1": 1}]
    else:
        assert "params" not in stmt and "params" not in statement(lookup, "WHERE")
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        content = path.read_bytes()
        assert SECRET_PASSWORD.encode() not in content and SECRET_TOKEN.encode() not in content, path


def test_positional_driver_parameters_are_redacted(
    engine: Engine, make_settings: Settings, samples: Any, data_dir: Path
) -> None:
    from tests.sqla_apps import SECRET_TOKEN

    async def raw_sql(scope: Any, receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ? || 'x'", (SECRET_TOKEN,)).scalar_one() == SECRET_TOKEN + "x"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(MemprofMiddleware(raw_sql, settings=make_settings(record_sql_params=True)))
    assert client.get("/").status_code == 200
    stmt = statement(only(samples()), "SELECT ?")
    assert stmt["params"] == [["[REDACTED]"]] and stmt["rows"] == 1
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert SECRET_TOKEN.encode() not in path.read_bytes()


def test_literals_written_into_sql_are_masked(
    engine: Engine, make_settings: Settings, samples: Any, data_dir: Path
) -> None:
    from tests.sqla_apps import SECRET_TOKEN

    async def inline(scope: Any, receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            sql = f"SELECT 'it''s {SECRET_TOKEN}' AS a, 'b' AS b, 42 AS n"
            assert conn.execute(text(sql)).one() == (f"it's {SECRET_TOKEN}", "b", 42)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(MemprofMiddleware(inline, settings=make_settings(record_sql_params=True)))
    assert client.get("/").status_code == 200
    (stmt,) = only(samples())["queries"]["statements"]
    assert stmt["sql"] == "SELECT '?' AS a, '?' AS b, 42 AS n"
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert SECRET_TOKEN.encode() not in path.read_bytes()


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

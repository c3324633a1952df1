"""SQLAlchemy instrumentation through real FastAPI apps on real SQLite: what a profiled request records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.integrations.sqlalchemy import engine_states
from memprof.records.models import Sample
from tests.sqla_apps import Schema, criteria_session_class, seed, sync_app
from tests.sqla_support import Settings, engine, model, only, run, schema, statement

__all__ = ["engine", "schema"]  # fixtures


@pytest.mark.parametrize(
    ("path", "function"),
    [("/n1/listcomp", "n_plus_one_in_a_list"), ("/n1/genexpr", "n_plus_one_in_a_generator")],
)
def test_a_loop_in_a_comprehension_is_named_after_its_function(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any, path: str, function: str
) -> None:
    """A comprehension runs in a frame of its own on 3.11 (``<listcomp>``), inlined on 3.12+; a generator
    expression has one everywhere (``<genexpr>``): the N+1 names the endpoint's function on every Python."""
    run(sync_app(schema, sessionmaker(engine)), make_settings(), path)
    lazy = statement(only(samples()), f"FROM {schema.prefix}_book")
    assert lazy["count"] == 12 and lazy["n_plus_one"]
    assert lazy["frame"].startswith("tests/sqla_apps.py:") and lazy["frame"].endswith(f" in {function}")
    line = int(lazy["frame"].split(":")[1].split()[0])
    assert "for author in authors" in Path("tests/sqla_apps.py").read_text().splitlines()[line - 1]


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

"""SQLAlchemy: secrets never leave the process, and SQL outside requests is never charged to one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.integrations.sqlalchemy import reset_unattributed, unattributed
from tests.datadir import written_files
from tests.sqla_apps import SECRET_PASSWORD, SECRET_TOKEN, Schema, sync_app
from tests.sqla_support import Settings, engine, only, run, schema, statement

__all__ = ["engine", "schema"]  # fixtures


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
    settings = make_settings(record_sql_params=record_params)
    run(sync_app(schema, sessionmaker(engine)), settings, "/login", "/users/1")
    login, lookup = samples()
    stmt = statement(login, "WHERE")
    if record_params:
        assert stmt["params"] and all(v == "[REDACTED]" for v in stmt["params"][0].values())
        assert statement(lookup, "WHERE")["params"] == [{"pk_1": 1}]
    else:
        assert "params" not in stmt and "params" not in statement(lookup, "WHERE")
    files = written_files(data_dir)
    assert files
    for path, content in files.items():
        assert SECRET_PASSWORD.encode() not in content and SECRET_TOKEN.encode() not in content, path


def test_positional_driver_parameters_are_redacted(
    engine: Engine, make_settings: Settings, samples: Any, data_dir: Path
) -> None:
    async def raw_sql(scope: Any, receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ? || 'x'", (SECRET_TOKEN,)).scalar_one() == SECRET_TOKEN + "x"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(MemprofMiddleware(raw_sql, settings=make_settings(record_sql_params=True)))
    assert client.get("/").status_code == 200
    stmt = statement(only(samples()), "SELECT ?")
    assert stmt["params"] == [["[REDACTED]"]] and stmt["rows"] == 1
    for content in written_files(data_dir).values():
        assert SECRET_TOKEN.encode() not in content


def test_literals_written_into_sql_are_masked(
    engine: Engine, make_settings: Settings, samples: Any, data_dir: Path
) -> None:
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
    for content in written_files(data_dir).values():
        assert SECRET_TOKEN.encode() not in content


def test_sql_outside_profiled_requests_reaches_the_state_records_and_the_analyzer(
    engine: Engine, schema: Schema, make_settings: Settings, samples: Any, data_dir: Path
) -> None:
    from memprof.records.models import StateRecord
    from tests._memprof_server import wait_for
    from tests.cli import run_cli

    reset_unattributed()
    # Light mode, nothing sampled: every request's SQL runs outside a profiled request.
    settings = make_settings(mode="light", sample_rate=0.0, watchdog_interval_ms=20)
    with TestClient(MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=settings)) as client:
        assert wait_for(lambda: list(data_dir.glob("state-*.jsonl")))  # observing (start-up line written)
        for _ in range(3):
            assert client.get("/login").status_code == 200
    assert samples() == []
    states = [json.loads(line) for p in data_dir.glob("state-*.jsonl") for line in p.read_text().splitlines()]
    (shutdown,) = [s for s in states if s["phase"] == "shutdown"]
    StateRecord.model_validate(shutdown)
    outside = shutdown["sql_outside_requests"]
    assert outside["count"] == 3 and outside["total_ms"] > 0
    (login,) = [s for s in outside["statements"] if "WHERE" in s["sql"]]
    assert login["count"] == 3 and SECRET_PASSWORD not in json.dumps(shutdown)
    result = run_cli("analyze", str(data_dir), "--json")
    assert result.code == 0, result
    section = json.loads(result.stdout)["sql_outside_requests"]
    assert section["count"] == 3 and section["workers"] == 1
    assert section["statements"][0] == {"sql": login["sql"], "count": 3, "total_ms": login["total_ms"]}
    text = run_cli("analyze", str(data_dir)).stdout
    assert "SQL outside profiled requests (start-up, jobs, unsampled requests): 3 statements" in text

"""The one line does everything: ``app.add_middleware(MemprofMiddleware)`` alone instruments SQLAlchemy
(every engine, present and future) unless ``MEMPROF_SQLALCHEMY=off``, never imports it for an app that
does not use it, says once at start-up what it does, and ``memprof analyze`` says when SQL is missing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Mapper, Session, sessionmaker
from starlette.testclient import TestClient

import memprof.middleware
from memprof import MemprofMiddleware
from memprof.analysis.sql_status import COUNTS_ONLY, NOT_INSTRUMENTED
from memprof.integrations.sqlalchemy import _orm as _sqla_orm
from memprof.integrations.sqlalchemy import is_instrumented
from memprof.runtime import current_runtime
from memprof.safety.control import poll_now
from tests.cli import run_cli
from tests.logs import capture_logs
from tests.sqla_apps import Schema, make_schema, seed, sync_app

ROOT = Path(__file__).resolve().parent.parent


def one_line_app(tmp_path: Path, schema: Schema) -> FastAPI:
    """A FastAPI + SQLAlchemy (SQLite) app whose only memprof line is ``add_middleware``."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema)
    app = sync_app(schema, sessionmaker(engine))
    app.add_middleware(MemprofMiddleware)
    return app


def analyze_json(data_dir: Path) -> dict[str, Any]:
    result = run_cli("analyze", str(data_dir), "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_one_line_records_sql_and_finds_the_n_plus_one(
    tmp_path: Path, data_dir: Path, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMPROF_MODE", "aggressive")
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MEMPROF_LOG_EVENTS", "false")
    schema = make_schema()
    with TestClient(one_line_app(tmp_path, schema)) as client:
        assert is_instrumented()
        for _ in range(2):
            assert client.get("/n1").json() == {"authors": 12, "books": 60}
    recs = samples()
    assert len(recs) == 2
    for rec in recs:
        queries = rec["queries"]
        assert queries["count"] == 13  # the authors, then one lazy load per author
        lazy = next(st for st in queries["statements"] if f"FROM {schema.prefix}_book" in st["sql"])
        assert lazy["count"] == 12 and lazy["instances"] == 60 and lazy["lazy"] is True
        assert rec["queries"]["n_plus_one"]
        assert rec["models"]["classes"]
    summary = analyze_json(data_dir)
    n1 = next(f for f in summary["findings"] if f["kind"] == "n_plus_one")
    assert n1["evidence"]["routes"] == ["/n1"] and n1["evidence"]["max_per_request"] == 12
    assert summary["sql_status"] == {"recorded": True, "hint": None}
    assert "SQL: " not in run_cli("analyze", str(data_dir)).stdout


def test_sqlalchemy_off_records_no_sql_and_analyze_says_so(
    tmp_path: Path, data_dir: Path, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMPROF_MODE", "aggressive")
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MEMPROF_LOG_EVENTS", "false")
    monkeypatch.setenv("MEMPROF_SQLALCHEMY", "off")
    with TestClient(one_line_app(tmp_path, make_schema())) as client:
        assert client.get("/n1").status_code == 200
        assert not is_instrumented()
    (rec,) = samples()
    assert "queries" not in rec and "models" not in rec
    assert analyze_json(data_dir)["sql_status"] == {"recorded": False, "hint": NOT_INSTRUMENTED}
    text = run_cli("analyze", str(data_dir)).stdout
    assert f"SQL: {NOT_INSTRUMENTED}." in text


def test_light_samples_say_how_to_get_statements(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    schema = make_schema()
    app = one_line_app(tmp_path, schema)
    app.user_middleware.clear()
    app.add_middleware(MemprofMiddleware, settings=make_settings(mode="light", sample_rate=1.0))
    with TestClient(app) as client:
        assert client.get("/n1").status_code == 200
    (rec,) = samples()
    assert rec["detail"] == "checkpoints" and rec["queries"]["count"] == 13
    assert analyze_json(data_dir)["sql_status"] == {"recorded": False, "hint": COUNTS_ONLY}


def test_objects_are_counted_only_while_the_mode_can_profile_in_full(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    """Light mode: no per-object listener anywhere. ``memprof enable aggressive``: the Sessions of full
    requests count their objects. Back to light: none again."""
    schema = make_schema()
    app = one_line_app(tmp_path, schema)
    settings = make_settings(mode="light", control_max_mode="aggressive", control_poll_interval_s=0.05)
    app.user_middleware.clear()
    app.add_middleware(MemprofMiddleware, settings=settings)
    begun: list[Session] = []

    def remember(session: Session, *_args: Any) -> None:
        begun.append(session)

    def listening() -> list[bool]:
        return [bool(s.dispatch.loaded_as_persistent) for s in begun]

    def enable(mode: str) -> None:
        result = run_cli("enable", mode, "--for", "5m", "--data-dir", str(data_dir))
        assert result.code == 0, result
        runtime = current_runtime()
        assert runtime is not None
        poll_now()
        deadline = time.monotonic() + 5
        while runtime.mode.value != mode and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.mode.value == mode
        begun.clear()

    event.listen(Session, "after_begin", remember)
    try:
        with TestClient(app) as client:
            for _ in range(5):
                assert client.get("/n1").status_code == 200
            assert begun and not any(listening())
            assert not event.contains(Mapper, "load", _sqla_orm.on_load)
            enable("aggressive")
            assert client.get("/n1").status_code == 200
            assert listening() == [True]
            enable("light")
            assert client.get("/n1").status_code == 200
            assert begun and not any(listening())
    finally:
        event.remove(Session, "after_begin", remember)
    full = [r for r in samples() if r["detail"] == "full"]
    assert len(full) == 1
    assert sum(st["instances"] for st in full[0]["queries"]["statements"]) == 12 + 60


def test_the_start_up_line_says_what_memprof_does(
    tmp_path: Path, make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memprof.middleware, "_announced_pid", None)
    app = one_line_app(tmp_path, make_schema())
    app.user_middleware.clear()
    settings = make_settings(mode="light", data_dir=tmp_path / "rel")
    app.add_middleware(MemprofMiddleware, settings=settings)
    with capture_logs(logging.INFO) as events, TestClient(app) as client:
        assert client.get("/users/1").status_code == 200
        assert client.get("/users/1").status_code == 200
    started = [e for e in events if e["event"].startswith("memprof.started")]
    assert len(started) == 1
    (line,) = started
    assert line["event"] == (
        f"memprof.started: light mode, sample rate 0.01, data dir {tmp_path / 'rel'}, "
        "SQLAlchemy instrumented (every engine)"
    )
    assert (line["mode"], line["sample_rate"], line["sqlalchemy"]) == (
        "light",
        0.01,
        "instrumented (every engine)",
    )


def _run(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MEMPROF_RAISE_INTERNAL_ERRORS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_app_without_sqlalchemy_never_imports_it(tmp_path: Path) -> None:
    script = """
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient
        from memprof import MemprofMiddleware

        app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("hello"))])
        app.add_middleware(MemprofMiddleware)
        with TestClient(app) as client:
            assert client.get("/").text == "hello"
            assert client.get("/").text == "hello"
        print("sqlalchemy imported:", sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy"))
    """
    done = _run(script, tmp_path, MEMPROF_MODE="aggressive")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sqlalchemy imported: []"
    started = [line for line in done.stderr.splitlines() if "memprof.started" in line]
    assert started == [
        f"memprof INFO memprof.started: aggressive mode, sample rate 1, data dir {tmp_path / 'memprof-data'}, "
        "SQLAlchemy not instrumented (not imported by the app)"
    ]


def test_sqlalchemy_imported_at_lifespan_start_up_is_instrumented(tmp_path: Path) -> None:
    """An app that imports SQLAlchemy in its lifespan (after the middleware was built) gets it
    instrumented when serving starts."""
    script = """
        import contextlib, json, pathlib, sys
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient
        import memprof
        from memprof import MemprofMiddleware

        state = {}

        @contextlib.asynccontextmanager
        async def lifespan(app):
            from sqlalchemy import create_engine, text
            state["engine"] = create_engine("sqlite://")
            state["text"] = text
            yield

        def query(request):
            with state["engine"].connect() as conn:
                return JSONResponse(conn.execute(state["text"]("SELECT 41 + 1")).scalar_one())

        app = MemprofMiddleware(Starlette(routes=[Route("/", query)], lifespan=lifespan))
        assert "sqlalchemy" not in sys.modules
        with TestClient(app) as client:
            assert client.get("/").json() == 42
        memprof.flush(10)
        (path,) = pathlib.Path("memprof-data").glob("samples-*.jsonl")
        print(json.loads(path.read_text())["queries"]["count"])
    """
    done = _run(script, tmp_path, MEMPROF_MODE="aggressive", MEMPROF_LOG_EVENTS="false")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"

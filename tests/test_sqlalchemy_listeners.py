"""The SQLAlchemy listeners' life cycle and isolation: idempotent, removable, never hurting the app."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Mapper, Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.integrations.sqlalchemy import _events as _sqla_events
from memprof.integrations.sqlalchemy import _frames as _sqla_frames
from memprof.integrations.sqlalchemy import _orm as _sqla_orm
from memprof.integrations.sqlalchemy import is_instrumented
from memprof.profile import RequestProfile, _current
from memprof.runtime import FINISH_HOOKS, current_runtime
from memprof.safety.control import poll_now
from memprof.safety.isolation import errors
from tests.cli import run_cli
from tests.sqla_apps import make_schema, seed, sync_app

# Dialect events: listening on an engine (or Engine) lands on its dialect (or Dialect).
ENGINE_EVENTS = ("do_execute", "do_execute_no_params", "do_executemany", "handle_error")
# Connection events: memprof adds none (one would make every Connection join its engine's dispatch).
CONNECTION_EVENTS = ("before_cursor_execute", "after_cursor_execute", "engine_connect", "before_execute")
MAPPER_EVENTS = ("load", "after_insert", "after_update", "after_delete")
SESSION_EVENTS = ("after_begin", "after_flush", "after_transaction_end")


def listener_counts(engine: Engine) -> dict[str, int]:
    """How many listeners every event we use has: on the engine, and (through fresh instances, which
    inherit class-level listeners) on Engine, Mapper and Session."""
    probe = create_engine("sqlite://")
    mapper = sa_inspect(make_schema().Author)
    counts = {}
    for label, target in (("engine", engine), ("Engine", probe)):
        for name in ENGINE_EVENTS:
            counts[f"{label}.{name}"] = len(getattr(target.dialect.dispatch, name))
        for name in CONNECTION_EVENTS:
            counts[f"{label}.{name}"] = len(getattr(target.dispatch, name))
    counts.update({f"Mapper.{n}": len(getattr(mapper.dispatch, n)) for n in MAPPER_EVENTS[1:]})
    # load is an instance event: it lands on each mapped class's manager
    counts["Mapper.load"] = len(mapper.class_manager.dispatch.load)
    counts.update({f"Session.{n}": len(getattr(Session().dispatch, n)) for n in SESSION_EVENTS})
    counts["Session.loaded_as_persistent"] = len(Session().dispatch.loaded_as_persistent)
    return counts


def our_functions() -> list[Callable[..., Any]]:
    return [
        _sqla_events.do_execute,
        _sqla_events.do_execute_no_params,
        _sqla_events.do_executemany,
        _sqla_orm.on_load,
        _sqla_orm.on_loaded,
        _sqla_orm.after_insert,
        _sqla_orm.after_update,
        _sqla_orm.after_delete,
        _sqla_orm.on_begin,
        _sqla_orm.watch_session,
    ]


def test_uninstrument_leaves_no_listener(
    tmp_path: Path, make_settings: Callable[..., Any], samples: Any
) -> None:
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'u.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=2)
    before = listener_counts(engine)
    instrument_sqlalchemy(engine)
    instrument_sqlalchemy(create_async_engine("sqlite+aiosqlite://"))
    instrument_sqlalchemy()  # every engine on top: engine-level listeners are replaced
    assert is_instrumented() and is_instrumented(engine)
    assert listener_counts(engine) != before
    uninstrument_sqlalchemy()
    assert listener_counts(engine) == before
    assert not is_instrumented() and not is_instrumented(engine)
    for fn in our_functions():
        for target, names in (
            (engine, ENGINE_EVENTS),
            (Engine, ENGINE_EVENTS),
            (Mapper, MAPPER_EVENTS),
        ):
            for name in names:
                assert not event.contains(target, name, fn)
    assert all(getattr(hook, "__module__", "") != "memprof.integrations.sqlalchemy" for hook in FINISH_HOOKS)
    settings = make_settings(sqlalchemy="off")  # or the middleware instruments every engine again
    with TestClient(MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=settings)) as c:
        assert c.get("/n1").status_code == 200
    (rec,) = samples()
    assert rec.get("queries") is None and rec.get("models") is None
    engine.dispose()


def test_instrument_is_idempotent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'i.db'}")
    before = listener_counts(engine)
    try:
        instrument_sqlalchemy(engine)
        once = listener_counts(engine)
        instrument_sqlalchemy(engine)
        instrument_sqlalchemy(engine, count_instances=True)
        assert listener_counts(engine) == once
        assert once["engine.do_execute"] == before["engine.do_execute"] + 1
        instrument_sqlalchemy()
        instrument_sqlalchemy()
        every = listener_counts(engine)
        # class-level now (an engine's dispatch includes those): still exactly one for the engine
        assert every["engine.do_execute"] == before["engine.do_execute"] + 1
        assert every["Engine.do_execute"] == before["Engine.do_execute"] + 1
        instrument_sqlalchemy(engine)  # already covered by the class-level listeners
        assert listener_counts(engine) == every
    finally:
        uninstrument_sqlalchemy()
    assert listener_counts(engine) == before
    with pytest.raises(TypeError, match="Engine or AsyncEngine"):
        instrument_sqlalchemy("sqlite://")


def test_cheaper_counting_without_load_listener(
    tmp_path: Path, make_settings: Callable[..., Any], samples: Any
) -> None:
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=3)
    instrument_sqlalchemy(engine, count_instances=False)
    sessions: list[Session] = []

    def remember(session: Session, *_args: Any) -> None:
        sessions.append(session)

    event.listen(Session, "after_begin", remember)
    try:
        # The middleware instruments every engine on top; the explicit choice stays in force.
        with TestClient(
            MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())
        ) as c:
            assert c.get("/joined").status_code == 200
        assert sessions and not any(s.dispatch.loaded_as_persistent for s in sessions)
    finally:
        event.remove(Session, "after_begin", remember)
        uninstrument_sqlalchemy()
        engine.dispose()
    assert listener_counts(engine)["Mapper.load"] == 0
    (rec,) = samples()
    (stmt,) = rec["queries"]["statements"]
    assert stmt["rows"] == 3 * 5 * 4 and stmt["instances"] == 0


def _wait_for_mode(mode: str) -> None:
    runtime = current_runtime()
    assert runtime is not None
    poll_now()
    deadline = time.monotonic() + 5
    while runtime.mode.value != mode and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.mode.value == mode


def test_objects_counted_only_in_full_requests(
    tmp_path: Path, make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    """Light mode: no per-object listener anywhere. A runtime override to aggressive: the Sessions of
    full requests count their objects; a Session reused by a later request that is not profiled in full
    loses its listener at its next transaction."""
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=3)
    shared = Session(engine)  # one Session for every request, as a scoped_session per thread would be

    def books(request: Request) -> Response:
        try:
            return JSONResponse({"books": len(shared.scalars(select(schema.Book)).all())})
        finally:
            shared.commit()
            shared.expunge_all()

    app = Starlette(routes=[Route("/books", books)])
    settings = make_settings(
        mode="light", sample_rate=1.0, control_max_mode="aggressive", control_poll_interval_s=0.05
    )

    def enable(mode: str) -> None:
        assert run_cli("enable", mode, "--data-dir", str(data_dir)).code == 0
        _wait_for_mode(mode)

    try:
        with TestClient(MemprofMiddleware(app, settings=settings)) as c:
            assert c.get("/books").json() == {"books": 15}
            assert not shared.dispatch.loaded_as_persistent
            assert listener_counts(engine)["Mapper.load"] == 0
            enable("aggressive")
            assert c.get("/books").json() == {"books": 15}
            assert event.contains(shared, "loaded_as_persistent", _sqla_orm.on_loaded)
            enable("light")
            assert c.get("/books").json() == {"books": 15}
            assert not shared.dispatch.loaded_as_persistent
            assert listener_counts(engine)["Mapper.load"] == 0
    finally:
        shared.close()
        engine.dispose()
    light, full, light_again = samples()
    assert light["detail"] == light_again["detail"] == "checkpoints"
    assert light["queries"] == {"count": 1, "total_ms": light["queries"]["total_ms"]}
    assert full["detail"] == "full" and full["queries"]["statements"][0]["instances"] == 15


def test_aggressive_at_start_up_counts_objects_with_one_mapper_listener(
    tmp_path: Path, make_settings: Callable[..., Any], samples: Any
) -> None:
    """Every request is profiled in full: one Mapper listener is cheaper than one per Session."""
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=3)
    begun: list[Session] = []

    def remember(session: Session, *_args: Any) -> None:
        begun.append(session)

    event.listen(Session, "after_begin", remember)
    try:
        with TestClient(
            MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())
        ) as c:
            assert event.contains(Mapper, "load", _sqla_orm.on_load)
            assert c.get("/joined").status_code == 200
        assert begun and not any(s.dispatch.loaded_as_persistent for s in begun)
    finally:
        event.remove(Session, "after_begin", remember)
        engine.dispose()
    (rec,) = samples()
    (stmt,) = rec["queries"]["statements"]
    assert stmt["instances"] == 3 + 3 * 5 + 3 * 4  # authors, their books and awards
    uninstrument_sqlalchemy()
    assert not event.contains(Mapper, "load", _sqla_orm.on_load)


def _serve_once(tmp_path: Path, settings: Any) -> tuple[weakref.ref[Any], list[weakref.ref[Any]]]:
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=2)
    del session
    instrument_sqlalchemy(engine)
    refs: list[weakref.ref[Any]] = []

    class TrackedSession(Session):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            refs.append(weakref.ref(self))

    factory = sessionmaker(engine, class_=TrackedSession)

    def n_plus_one(request: Request) -> Response:
        with factory() as session:
            authors = session.scalars(select(schema.Author)).all()
            return JSONResponse({"books": sum(len(a.books) for a in authors)})

    # A plain Starlette app: FastAPI keeps its endpoint functions (and so the engine) in a cache.
    app = MemprofMiddleware(Starlette(routes=[Route("/n1", n_plus_one)]), settings=settings)
    with TestClient(app) as client:
        assert client.get("/n1").json() == {"books": 10}
    assert memprof.flush(10.0)
    engine.dispose()
    return weakref.ref(engine), refs


def test_nothing_keeps_sessions_or_engines_alive(tmp_path: Path, make_settings: Callable[..., Any]) -> None:
    try:
        engine_ref, session_refs = _serve_once(tmp_path, make_settings())
        gc.collect()
        assert session_refs and all(ref() is None for ref in session_refs)
        assert engine_ref() is None
    finally:
        uninstrument_sqlalchemy()


@pytest.mark.internal_errors_expected
def test_a_failing_listener_never_reaches_the_app(
    tmp_path: Path, make_settings: Callable[..., Any], samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = make_schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'f.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=2)

    def broken(*args: Any) -> Any:
        raise RuntimeError("memprof bug")

    monkeypatch.setattr(errors, "raise_errors", False)
    monkeypatch.setattr(_sqla_events, "observe_sites", broken)
    monkeypatch.setattr(_sqla_frames, "capture", broken)
    instrument_sqlalchemy(engine)
    try:
        with TestClient(
            MemprofMiddleware(sync_app(schema, sessionmaker(engine)), settings=make_settings())
        ) as c:
            assert c.get("/n1").json() == {"authors": 2, "books": 10}
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
    finally:
        uninstrument_sqlalchemy()
        engine.dispose()
    assert errors.counts["sqlalchemy.before_execute"] >= 1
    (rec,) = samples()
    assert rec["request"]["status"] == 200


def test_public_surface() -> None:
    import memprof.integrations.sqlalchemy as integration

    assert memprof.instrument_sqlalchemy is integration.instrument_sqlalchemy
    assert memprof.uninstrument_sqlalchemy is integration.uninstrument_sqlalchemy
    assert {"instrument_sqlalchemy", "uninstrument_sqlalchemy"} <= set(memprof.__all__)
    assert memprof.__all__ == sorted(memprof.__all__)
    assert integration.__all__ == [
        "engine_states",
        "instrument_sqlalchemy",
        "is_instrumented",
        "reset_unattributed",
        "unattributed",
        "uninstrument_sqlalchemy",
    ]
    for name in integration.__all__:
        assert getattr(integration, name).__doc__, name


def _profiled(fn: Callable[[], Any]) -> RequestProfile:
    """Run ``fn`` inside a full profile, set the way the middleware sets it; the profile."""
    profile = RequestProfile("GET", "/", "aggressive", True)
    token = _current.set(profile)
    try:
        fn()
    finally:
        _current.reset(token)
    return profile


def test_no_connection_event_is_added(tmp_path: Path) -> None:
    """Only dialect events: a connection event would make every Connection join its engine's dispatch
    and run the engine's event hooks, profiled or not."""
    engine = create_engine(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        instrument_sqlalchemy(engine)
        assert not engine._has_events and engine.dialect._has_events
        with engine.connect() as conn:
            assert not conn._has_events
        instrument_sqlalchemy()
        probe = create_engine("sqlite://")
        assert not engine._has_events and not probe._has_events and not Engine._has_events
        with probe.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        uninstrument_sqlalchemy()
        engine.dispose()


def test_other_do_execute_listeners_run_as_without_memprof(tmp_path: Path) -> None:
    """memprof runs the execution itself: listeners registered after it still run, in order, and one
    that executes the statement itself (returns True) still replaces the dialect's execution."""
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    calls: list[str] = []

    def first(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        calls.append("first")
        return False

    def replacing(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        calls.append("replacing")
        cursor.execute(statement.replace("41", "40"), parameters)
        return True

    def never(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        calls.append("never")
        return False

    event.listen(engine, "do_execute", first)
    instrument_sqlalchemy(engine)
    event.listen(engine, "do_execute", replacing)
    event.listen(engine, "do_execute", never)
    results: list[int] = []

    def run() -> None:
        with engine.connect() as conn:
            results.append(conn.execute(text("SELECT 41 + :one"), {"one": 1}).scalar_one())

    try:
        profile = _profiled(run)
        assert results == [41] and calls == ["first", "replacing"]
        queries = profile.sections["queries"].to_record()
        assert queries["count"] == 1 and queries["statements"][0]["rows"] == 1
        event.remove(engine, "do_execute", replacing)
        event.remove(engine, "do_execute", never)
        _profiled(run)
        assert results == [41, 42]
    finally:
        uninstrument_sqlalchemy()
        event.remove(engine, "do_execute", first)
        engine.dispose()


def test_executemany_no_params_and_failures_are_counted(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    instrument_sqlalchemy(engine)
    failure: list[BaseException] = []

    def run() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])  # executemany
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2  # no parameters
            try:
                conn.execute(text("SELECT nope FROM t"))
            except Exception as exc:  # the driver's error, unchanged
                failure.append(exc)

    try:
        profile = _profiled(run)
    finally:
        uninstrument_sqlalchemy()
        engine.dispose()
    assert type(failure[0]).__name__ == "OperationalError" and "nope" in str(failure[0])
    queries = profile.sections["queries"].to_record()
    by_sql = {s["sql"]: s for s in queries["statements"]}
    assert queries["count"] == 3 and len(by_sql) == 3
    assert by_sql["SELECT count(*) FROM t"]["rows"] == 1
    assert by_sql["INSERT INTO t (v) VALUES (?)"]["count"] == 1
    assert by_sql["SELECT nope FROM t"]["count"] == 1 and by_sql["SELECT nope FROM t"]["total_ms"] >= 0

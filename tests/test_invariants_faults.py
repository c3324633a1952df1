"""Fault injection: each internal step of memprof fails in turn; the app's responses do not change.

With ``MEMPROF_RAISE_INTERNAL_ERRORS`` off (production behaviour), every step in :data:`FAULTS` is
made to raise, then real Starlette and FastAPI apps serve the same requests with and without memprof:
status, headers and body must be byte-identical, the app's own exception must come out unchanged,
background tasks must run, and memprof must have counted the failure (so the fault really fired).

A new internal step is one line in :data:`FAULTS`: a name and a function that installs the fault
with ``monkeypatch``. Integrations that register through ``register_hooks`` (SQLAlchemy, sessions) are
covered by the ``integration_hooks`` entries, which make every registered hook fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import memprof.integrations.sessions as sessions_mod
import memprof.integrations.sqlalchemy._events as sqla_events
from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof import profile as profile_mod
from memprof import runtime as runtime_mod
from memprof.profile import RequestProfile
from memprof.runtime import Runtime
from memprof.safety.control import Controller, poll_now
from memprof.safety.guards import CircuitBreaker, OverheadGuard
from memprof.safety.isolation import errors
from memprof.safety.tokens import TokenVerifier, sign_token
from memprof.watchdog import dump as dump_mod
from memprof.writer import RecordWriter
from tests.apps import BACKGROUND_DONE, AppError, fastapi_app, starlette_app

SECRET = "faults-secret-0123456789abcdef"
Patch = Callable[[pytest.MonkeyPatch], None]


class InjectedFault(RuntimeError):
    """What every injected fault raises."""


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise InjectedFault("injected")


def _attr(target: Any, name: str) -> Patch:
    return lambda mp: mp.setattr(target, name, _boom)


def _failing_hooks(kind: str) -> Patch:
    def install(mp: pytest.MonkeyPatch) -> None:
        hooks = runtime_mod.START_HOOKS if kind == "start" else runtime_mod.FINISH_HOOKS
        mp.setattr(runtime_mod, f"{kind.upper()}_HOOKS", [*([_boom] * max(1, len(hooks)))])

    return install


class _FailingSection:
    def to_record(self) -> Any:
        raise InjectedFault("section")


def _failing_section(mp: pytest.MonkeyPatch) -> None:
    def attach(profile: RequestProfile, scope: Any) -> None:
        profile.sections["failing"] = _FailingSection()

    mp.setattr(runtime_mod, "START_HOOKS", [*runtime_mod.START_HOOKS, attach])


@dataclass
class Fault:
    name: str
    install: Patch
    settings: dict[str, Any] = field(default_factory=dict)
    background: bool = False  # fails in a memprof thread: wait for it after the requests


TARGETED = {"mode": "targeted", "targeted_secret": SECRET}

FAULTS = [
    Fault("readings.rss", lambda mp: (_attr(runtime_mod, "rss_at")(mp), _attr(profile_mod, "rss_at")(mp))),
    Fault("readings.peak", _attr(runtime_mod, "peak_at")),
    Fault(
        "readings.heap",
        lambda mp: (
            _attr(runtime_mod, "heap_at")(mp),
            _attr(profile_mod, "heap_at")(mp),
            _attr(sqla_events, "heap_at")(mp),
        ),
    ),
    Fault("sampling", _attr(Runtime, "decide")),
    Fault("token_check", _attr(TokenVerifier, "check"), TARGETED),
    Fault("begin", _attr(Runtime, "begin")),
    Fault("checkpoints", _attr(RequestProfile, "add_checkpoint")),
    Fault("route_template", _attr(runtime_mod, "find_route_template")),
    Fault("end", _attr(Runtime, "end")),
    Fault("overhead_guard", _attr(OverheadGuard, "observe")),
    Fault("writer.submit", _attr(RecordWriter, "submit")),
    Fault("record_building", _attr(Runtime, "build_record"), background=True),
    Fault("record_section", _failing_section, background=True),
    Fault("breaker_check", _attr(CircuitBreaker, "check"), background=True),
    Fault("writer.write", _attr(RecordWriter, "_write"), background=True),
    Fault("control_poll", _attr(Controller, "tick"), {"control_poll_interval_s": 0.05}, background=True),
    Fault("integration_hooks.start", _failing_hooks("start")),  # every integration's start hooks
    Fault("integration_hooks.finish", _failing_hooks("finish")),  # ... and their analysis at the end
    Fault("sqlalchemy.listeners", _attr(sqla_events, "_queries")),  # inside every cursor listener
    Fault("sqlalchemy.observe", _attr(sqla_events, "_observe")),
    Fault("sqlalchemy.rows", _attr(sqla_events, "_count_rows")),
    Fault("session_analysis", _attr(sessions_mod, "analyze_session")),
    Fault("dumps", _attr(dump_mod, "build_dump")),
]


def sql_app() -> Starlette:
    """SQL through an instrumented engine, a Starlette session, and a dump from inside an endpoint."""
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        conn.execute(sa.text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"))
    instrument_sqlalchemy(engine)

    async def rows(request: Request) -> Response:
        request.session["cart"] = ["x"] * 10
        with engine.connect() as conn:
            found = [r.v for r in conn.execute(sa.text("SELECT v FROM t WHERE id > :n"), {"n": 0})]
            for i in range(3):
                conn.execute(sa.text("SELECT v FROM t WHERE id = :i"), {"i": i}).all()
        return JSONResponse({"rows": found})

    async def take_dump(request: Request) -> Response:
        # as the dump docs advise: off the event loop; a path or None, the response never shows it
        await anyio.to_thread.run_sync(dump_mod.dump, "faults")
        return JSONResponse({"dumped": True})

    app = Starlette(routes=[Route("/rows", rows), Route("/dump", take_dump)])
    app.add_middleware(SessionMiddleware, secret_key="faults-session-key")
    return app


REQUESTS = ["/", "/users/7", "/stream", "/boom", "/background", "/api/items/3", "/nowhere", "/users/1/x"]
FASTAPI_REQUESTS = ["/users/3", "/sync/10", "/boom", "/docs", "/nowhere"]
SQL_REQUESTS = ["/rows", "/dump", "/rows"]
PATHS_OF = {"starlette": REQUESTS, "fastapi": FASTAPI_REQUESTS, "sql": SQL_REQUESTS}


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[list[Any], str | None]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET"}
    scope |= {"scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"a=1"}
    scope |= {"root_path": "", "headers": [(b"host", b"testserver"), *headers]}
    scope |= {"client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    sent: list[Any] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    try:
        await app(scope, receive, send)
    except AppError as exc:  # the app's own exception: it must come out exactly as without memprof
        return sent, f"{type(exc).__name__}: {exc}"
    return sent, None


def _stable(results: list[Any]) -> list[Any]:
    out = []
    for messages, error, background in results:
        clean = []
        for m in messages:
            if m["type"] == "http.response.start":
                headers = [(k, b"<session>" if k == b"set-cookie" else v) for k, v in m["headers"]]
                m = {**m, "headers": headers}
            clean.append(m)
        out.append((clean, error, background))
    return out


def _serve(app: Any, paths: list[str], token: bool) -> list[Any]:
    loop = asyncio.new_event_loop()
    out = []
    try:
        for path in paths:
            BACKGROUND_DONE.clear()
            headers = [(b"x-memprof-profile", sign_token(SECRET, ttl=60).encode())] if token else []
            out.append((*loop.run_until_complete(_call(app, path, headers)), list(BACKGROUND_DONE)))
    finally:
        loop.close()
    return out


@pytest.mark.internal_errors_expected
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
@pytest.mark.parametrize("app_name", list(PATHS_OF))
def test_an_internal_failure_never_changes_the_response(
    fault: Fault,
    app_name: str,
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = {"starlette": starlette_app, "fastapi": fastapi_app, "sql": sql_app}[app_name]
    paths = PATHS_OF[app_name]
    if fault.name.startswith(("sqlalchemy", "session", "dumps")) and app_name != "sql":
        pytest.skip("this step runs only in the SQL/session/dump app")
    targeted = fault.settings.get("mode") == "targeted"
    expected = _serve(factory(), paths, targeted)

    monkeypatch.setattr(errors, "raise_errors", False)
    mw = MemprofMiddleware(factory(), settings=make_settings(**fault.settings))
    fault.install(monkeypatch)
    if fault.name == "control_poll":
        poll_now()
    actual = _serve(mw, paths, targeted)

    uninstrument_sqlalchemy()
    # Set-Cookie of a session differs run to run (signed with a timestamp): compare the rest exactly.
    assert _stable(actual) == _stable(expected)  # status, headers, body, app exception, background tasks
    assert mw.runtime.writer.flush(10)
    deadline = time.monotonic() + 5
    while errors.total == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert errors.total > 0, "the injected fault never fired"
    assert all(place != "" for place in errors.counts)


def test_the_fault_table_covers_every_request_path_step() -> None:
    names = {f.name.split(".")[0] for f in FAULTS}
    assert {"readings", "sampling", "begin", "checkpoints", "end", "writer", "record_building"} <= names

"""Canary: a distinct secret in every channel; none may reach a file in the data dir or a log line.

Channels: request headers, cookies, the query string, SQL bound parameters, session values, a local
variable of an endpoint that triggers a dump, the text of an
exception inside memprof, the Redis URL's password and the targeted secret. Run with default settings
and with every "record more" setting on (where values must come out redacted).
"""

from __future__ import annotations

import importlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof import runtime as runtime_mod
from memprof.safety.control import poll_now
from memprof.safety.isolation import errors
from memprof.safety.redaction import redact, redact_text
from memprof.watchdog.dump import dump
from tests.datadir import written_files
from tests.logs import capture_logs

CHANNELS = [
    "authorization",
    "api_key_header",
    "cookie",
    "query_token",
    "query_plain",
    "sql_param",
    "sql_param_innocuous",
    "session",
    "local_variable",
    "internal_error",
    "redis_password",
    "targeted_secret",
]


def texts_of(files: dict[Path, bytes]) -> str:
    return "\n".join(c.decode("utf-8", "replace") for p, c in files.items() if p.name.startswith("samples-"))


def canaries() -> dict[str, str]:
    # Shaped like real keys (long hex), so that value-pattern redaction is what has to catch them.
    return {c: f"{secrets.token_hex(20)}" for c in CHANNELS}


def canary_app(secret: dict[str, str], engine: sa.Engine) -> Starlette:
    async def endpoint(request: Request) -> Response:
        request.session["api_token"] = secret["session"]
        local_variable = secret["local_variable"]  # noqa: F841 - lives in this frame during the dump
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT :password AS p, :note AS n, :comment AS c"),
                {"password": secret["sql_param"], "note": "x", "comment": secret["sql_param_innocuous"]},
            ).one()
        assert dump("canary") is not None  # a dump while the secret is a local of this frame
        return JSONResponse({"ok": row.n == "x"})

    app = Starlette(routes=[Route("/canary", endpoint)])
    app.add_middleware(SessionMiddleware, secret_key="session-signing-key-for-tests")
    return app


@pytest.fixture
def raising_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    state: dict[str, str] = {}

    def hook(profile: Any, scope: Any) -> None:
        raise RuntimeError(f"integration failed, token={state['secret']} key {state['secret']}")

    monkeypatch.setattr(errors, "raise_errors", False)
    runtime_mod.register_hooks(on_finish=hook)
    yield state
    runtime_mod.FINISH_HOOKS.remove(hook)


@pytest.mark.internal_errors_expected
@pytest.mark.parametrize("permissive", [False, True], ids=["defaults", "record_everything"])
def test_no_secret_reaches_files_or_logs(
    make_settings: Callable[..., Any],
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    raising_hook: dict[str, str],
    permissive: bool,
    tmp_path: Path,
) -> None:
    secret = canaries()
    raising_hook["secret"] = secret["internal_error"]
    extra: dict[str, Any] = {"record_sql_params": True, "tracemalloc": 5} if permissive else {}
    settings = make_settings(
        log_events=True,
        redis_url=f"redis://:{secret['redis_password']}@127.0.0.1:1/0",  # unreachable on purpose
        targeted_secret=secret["targeted_secret"],
        control_poll_interval_s=0.05,
        **extra,
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'canary.db'}")
    app = MemprofMiddleware(canary_app(secret, engine), settings=settings)
    instrument_sqlalchemy(engine, settings=settings)
    importlib.import_module("memprof.integrations.sessions")  # session analysis on
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events, TestClient(app) as client:
        client.cookies.set("sid", secret["cookie"])
        for _ in range(3):
            r = client.get(
                "/canary",
                params={"token": secret["query_token"], "q": secret["query_plain"]},
                headers={
                    "Authorization": f"Bearer {secret['authorization']}",
                    "X-Api-Key": secret["api_key_header"],
                },
            )
            assert r.json() == {"ok": True}
        poll_now()
        assert app.runtime.writer.flush(10)
        status_dir = data_dir / "status"
        for _ in range(100):
            if any(status_dir.glob("*.json")):
                break
            time.sleep(0.05)
    uninstrument_sqlalchemy()
    assert errors.counts["finish_hook:hook"] == 3
    assert any(e["event"] == "memprof.request.completed" for e in events)
    assert any(e["event"] == "memprof.internal_error" for e in events)
    files = written_files(data_dir)
    assert any(p.name.startswith("samples-") for p in files)
    assert any(p.parent.name == "status" for p in files)
    assert len([p for p in files if p.name.startswith("dump-")]) == 3
    queries = [
        json.loads(line)
        for p, content in files.items()
        if p.name.startswith("samples-")
        for line in content.decode().splitlines()
    ]
    assert all(q.get("queries") for q in queries)  # the SQL integration saw the statements
    if permissive:
        assert "[REDACTED]" in texts_of(files) or "<redacted>" in texts_of(files)
    texts = {str(p): content.decode("utf-8", "replace") for p, content in files.items()}
    texts["structlog events"] = "\n".join(repr(e) for e in events)
    # Every stdlib log record of the process except the test client's own (httpx logs the URL it sent).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    texts["logging records"] = "\n".join(r.getMessage() + repr(r.__dict__) for r in server_side)
    leaks = [
        (channel, where)
        for channel, value in secret.items()
        for where, text in texts.items()
        if value in text
    ]
    assert leaks == []


def test_redaction_by_key_and_by_value() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    params = {
        "password": "hunter2",
        "user_id": 42,
        "email": "a@example.org",
        "note": f"Authorization: Bearer abcdefgh12345678 and {jwt}",
        "blob": b"\x00\x01",
        "nested": {"api_key": "k", "list": ["0123456789abcdef0123456789abcdef", 1.5, None]},
        "dsn": "postgresql://app:s3cret@db/prod",
        "qs": "page=2&access_token=zzzzzz",
        "obj": object(),
    }
    out = redact(params)
    assert out == {
        "password": "[REDACTED]",
        "user_id": 42,
        "email": "[REDACTED]",  # personal data, masked by value
        "note": "[REDACTED] and [REDACTED]",
        "blob": "<2 bytes>",
        "nested": {"api_key": "[REDACTED]", "list": ["[REDACTED]", 1.5, None]},
        "dsn": "postgresql://[REDACTED]@db/prod",
        "qs": "page=2&[REDACTED]",
        "obj": "[DROPPED]",
    }
    assert redact([{"token": "t"}, ("a", 1)]) == [{"token": "[REDACTED]"}, ["a", 1]]


def test_a_masking_failure_drops_the_value() -> None:
    class Evil:  # a date-like value whose text cannot be produced
        def isoformat(self) -> str:
            return "2026-01-01"

        def __str__(self) -> str:
            raise RuntimeError("no")

    assert redact(Evil()) == "[DROPPED]"
    assert redact({"when": Evil(), "n": 1}) == {"when": "[DROPPED]", "n": 1}

    class Boom(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("no")

    assert redact(Boom(a=1)) == "[DROPPED]"
    assert redact_text("x" * 500).endswith("...") and len(redact_text("x" * 500)) == 203

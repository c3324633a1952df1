"""Session analysis through a real Starlette SessionMiddleware: sizes and key names, never values."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware
from memprof.integrations.sessions import hash_identity, unregister_session_provider
from memprof.records.models import SessionInfo
from tests.datadir import written_files

PLANTED = "PLANTED-session-value-9d41"
BIG = PLANTED * 5000  # ~130 KB


def _app(settings: Any) -> MemprofMiddleware:
    async def fill(request: Request) -> Response:
        request.session["cart"] = BIG
        request.session["user"] = "u1"
        request.session["_session_id"] = request.path_params["sid"]
        return JSONResponse({"ok": True})

    def read(request: Request) -> Response:
        path = memprof.dump("with-session")  # sync endpoint: runs in the threadpool
        return JSONResponse({"keys": sorted(request.session), "dump": path})

    routes = [Route("/fill/{sid}", fill), Route("/read", read)]
    inner = Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, secret_key="k" * 32)])
    return MemprofMiddleware(inner, settings=settings)


def test_large_session_key_shows_with_its_size_and_never_its_value(
    make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    app = _app(make_settings(log_events=True))
    from tests.logs import capture_logs

    with capture_logs() as events, TestClient(app) as client:
        client.get("/fill/abc")
        body = client.get("/read").json()
    assert body["keys"] == ["_session_id", "cart", "user"]
    records = samples()
    assert [r["request"]["route"] for r in records] == ["/fill/{sid}", "/read"]
    sessions = [SessionInfo.model_validate(r["session"]) for r in records]
    for info in sessions:
        assert info.keys == 3 and info.source == "scope"
        assert info.largest[0].key == "cart"
        assert info.largest[0].size >= len(BIG)
        assert info.size >= sum(k.size for k in info.largest)
        assert info.id_hash == hash_identity("abc")
    # The dump taken inside /read carries the same breakdown.
    dump = json.loads(Path(body["dump"]).read_text())
    assert dump["session"]["largest"][0]["key"] == "cart"
    assert dump["session"]["id_hash"] == hash_identity("abc")
    # The planted value is nowhere: no file of the data dir, no log event.
    files = written_files(data_dir)
    assert any(p.name.startswith("samples-") for p in files) and any(
        p.name.startswith("dump-") for p in files
    )
    for path, content in files.items():
        assert PLANTED.encode() not in content, path
    assert events and PLANTED not in json.dumps(events, default=str)


def test_sessions_are_followed_by_their_id_hash(make_settings: Callable[..., Any], samples: Any) -> None:
    app = _app(make_settings())
    with TestClient(app) as one, TestClient(app) as two:
        one.get("/fill/first")
        two.get("/fill/second")
    hashes = [r["session"]["id_hash"] for r in samples()]
    assert hashes == [hash_identity("first"), hash_identity("second")]
    assert "first" not in hashes[0]


def test_checkpoint_only_profiles_skip_session_analysis(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    app = _app(make_settings(mode="light", sample_rate=1.0))
    with TestClient(app) as client:
        client.get("/fill/abc")
    (record,) = samples()
    assert record["detail"] == "checkpoints" and record.get("session") is None


@pytest.fixture
def server_side_store() -> Iterator[dict[str, dict[str, Any]]]:
    store: dict[str, dict[str, Any]] = {"s-42": {"profile": {"name": "x" * 300}, "flags": [1, 2]}}

    def provider(scope: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None] | None:
        return (store["s-42"], "s-42") if scope.get("path") == "/store" else None

    memprof.register_session_provider(provider)
    yield store
    unregister_session_provider(provider)


def test_server_side_store_through_a_provider(
    make_settings: Callable[..., Any], samples: Any, server_side_store: dict[str, Any]
) -> None:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = MemprofMiddleware(Starlette(routes=[Route("/store", endpoint)]), settings=make_settings())
    with TestClient(app) as client:
        client.get("/store")
    (record,) = samples()
    info = record["session"]
    assert info["source"] == "provider" and info["keys"] == 2
    assert [k["key"] for k in info["largest"]] == ["profile", "flags"]
    assert info["id_hash"] == hash_identity("s-42")
    assert "x" * 300 not in json.dumps(record)

"""The middleware through real Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.records.models import Sample
from tests.apps import BACKGROUND_DONE, AppError, fastapi_app, starlette_app

FIVE = ["request_start", "app_start", "response_start", "response_end", "request_end"]


def test_aggressive_fastapi_writes_one_line_per_request(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    app = MemprofMiddleware(fastapi_app(), settings=make_settings())
    with TestClient(app) as client:
        for i in range(3):
            assert client.get(f"/users/{i}").json() == {"id": i}
    records = samples()
    assert len(records) == 3
    for rec in records:
        Sample.model_validate(rec)
        assert rec["schema"] == "memprof.sample" and rec["version"].startswith("1.")
        assert [c["name"] for c in rec["checkpoints"]] == FIVE
        assert rec["request"]["route"] == "/users/{user_id}"
        assert rec["request"]["status"] == 200
        assert rec["request"]["method"] == "GET"
        assert rec["memory"]["rss_start"] > 0 and rec["memory"]["limit"] > 0
        ms = [c["ms"] for c in rec["checkpoints"]]
        assert ms == sorted(ms)
    assert len({r["request"]["id"] for r in records}) == 3


def test_add_middleware_and_custom_checkpoints(make_settings: Callable[..., Any], samples: Any) -> None:
    app = starlette_app()
    settings = make_settings()
    app.add_middleware(MemprofMiddleware, settings=settings)
    with TestClient(app) as client:
        assert client.get("/users/7").json() == {"id": "7", "n": 10_000}
    (rec,) = samples()
    names = [c["name"] for c in rec["checkpoints"]]
    assert names == ["request_start", "app_start", "load_user", "after_load", *FIVE[2:]]
    span = rec["checkpoints"][2]
    assert span["rss_before"] > 0 and span["duration_ms"] >= 0 and span["error"] is False


def test_sync_endpoint_in_threadpool_sees_profile(make_settings: Callable[..., Any], samples: Any) -> None:
    app = MemprofMiddleware(fastapi_app(), settings=make_settings())
    with TestClient(app) as client:
        assert client.get("/sync/100").json() == {"total": 4950}
    (rec,) = samples()
    assert "compute" in [c["name"] for c in rec["checkpoints"]]
    assert rec["request"]["route"] == "/sync/{n}"


def test_mount_route_template(make_settings: Callable[..., Any], samples: Any) -> None:
    app = MemprofMiddleware(starlette_app(), settings=make_settings())
    with TestClient(app) as client:
        assert client.get("/api/items/3").status_code == 200
        assert client.get("/nope/123").status_code == 404
    routes = [r["request"]["route"] for r in samples()]
    assert routes == ["/api/items/{item_id:int}", "<unmatched>"]


def test_raw_asgi_app_uses_raw_path(make_settings: Callable[..., Any], samples: Any) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = TestClient(MemprofMiddleware(raw, settings=make_settings()))
    assert client.get("/a/b?secret=x").status_code == 204
    (rec,) = samples()
    assert rec["request"]["route"] == "/a/b" and rec["request"]["path"] == "/a/b"


def test_exception_is_the_same_object_and_recorded(make_settings: Callable[..., Any], samples: Any) -> None:
    raised: list[BaseException] = []

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        exc = AppError("x")
        raised.append(exc)
        raise exc

    app = MemprofMiddleware(failing, settings=make_settings())

    async def call() -> None:
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            pass

        await app(scope, receive, send)

    with pytest.raises(AppError) as info:
        asyncio.run(call())
    assert info.value is raised[0]
    # The traceback still reaches the app's own frame.
    assert info.traceback[-1].name == "failing"
    (rec,) = samples()
    assert rec["request"]["error"] == "AppError" and rec["request"]["status"] is None


def test_background_task_runs_before_request_end(make_settings: Callable[..., Any], samples: Any) -> None:
    BACKGROUND_DONE.clear()
    app = MemprofMiddleware(starlette_app(), settings=make_settings())
    with TestClient(app) as client:
        assert client.get("/background").text == "queued"
    assert BACKGROUND_DONE == ["/background"]
    (rec,) = samples()
    assert [c["name"] for c in rec["checkpoints"]] == FIVE


def test_streaming_response_end_is_last_chunk(make_settings: Callable[..., Any], samples: Any) -> None:
    app = MemprofMiddleware(starlette_app(), settings=make_settings())
    with TestClient(app) as client:
        r = client.get("/stream")
    assert r.text == "".join(f"chunk{i}\n" for i in range(5))
    (rec,) = samples()
    assert [c["name"] for c in rec["checkpoints"]] == FIVE


def test_websocket_and_lifespan_pass_through(make_settings: Callable[..., Any], samples: Any) -> None:
    app = MemprofMiddleware(starlette_app(), settings=make_settings())
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "HI"
    assert samples() == []


@pytest.mark.anyio
async def test_concurrent_requests_never_share_a_profile(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    app = MemprofMiddleware(starlette_app(), settings=make_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        responses = await asyncio.gather(
            client.get("/slow", params={"s": "0.1"}),
            client.get("/slow", params={"s": "0.05"}),
            client.get("/users/1"),
        )
    ids = [r.json().get("request_id") for r in responses[:2]]
    records = samples()
    assert len(records) == 3
    by_id = {r["request"]["id"]: r for r in records}
    assert set(ids) <= set(by_id) and ids[0] != ids[1]
    for rid in ids:
        assert by_id[rid]["request"]["route"] == "/slow"
        assert by_id[rid]["memory"]["concurrency"]["max"] == 3
        assert by_id[rid]["memory"]["shared"] is True
    user = next(r for r in records if r["request"]["route"] == "/users/{user_id}")
    assert [c["name"] for c in user["checkpoints"]][2:4] == ["load_user", "after_load"]


def test_light_mode_samples_about_one_percent(make_settings: Callable[..., Any], samples: Any) -> None:
    app = MemprofMiddleware(starlette_app(), settings=make_settings(mode="light"))
    with TestClient(app) as client:
        for _ in range(3000):
            client.get("/")
    records = samples()
    # Binomial(3000, 0.01): mean 30, sd 5.4; these bounds fail by chance about once in 10^6 runs.
    assert 6 <= len(records) <= 60
    assert all(r["detail"] == "checkpoints" and r["mode"] == "light" for r in records)


def test_disabled_and_targeted_profile_nothing(make_settings: Callable[..., Any], samples: Any) -> None:
    for settings in (make_settings(enabled=False), make_settings(mode="targeted", targeted_secret="s" * 32)):
        with TestClient(MemprofMiddleware(starlette_app(), settings=settings)) as client:
            assert client.get("/").text == "hello"
    assert samples() == []


def test_nested_memprof_passes_through(make_settings: Callable[..., Any], samples: Any) -> None:
    settings = make_settings()
    app = MemprofMiddleware(MemprofMiddleware(starlette_app(), settings=settings), settings=settings)
    with TestClient(app) as client:
        client.get("/")
    assert len(samples()) == 1


def test_endpoint_reaches_its_profile(make_settings: Callable[..., Any], samples: Any) -> None:
    with TestClient(MemprofMiddleware(starlette_app(), settings=make_settings())) as client:
        rid = client.get("/slow", params={"s": "0"}).json()["request_id"]
    (rec,) = samples()
    assert rec["request"]["id"] == rid


def test_close_writes_out_stops_threads_and_passes_through(
    make_settings: Callable[..., Any], samples: Any, data_dir: Any
) -> None:
    from memprof.background import BACKGROUND
    from memprof.safety.control import POLLER
    from tests._memprof_server import wait_for

    app = MemprofMiddleware(starlette_app(), settings=make_settings(watchdog_interval_ms=20))
    client = TestClient(app)  # no lifespan: nothing else shuts it down
    assert client.get("/").text == "hello"
    writer = app.runtime.writer
    assert writer in BACKGROUND.jobs and app.runtime.control in POLLER.controllers
    assert wait_for(lambda: list((data_dir / "workers").glob("*.json")))  # the flight file is live
    app.close()
    assert len(samples()) == 1, "the queued record was written out"
    assert writer not in BACKGROUND.jobs and app.runtime.control not in POLLER.controllers
    assert not list((data_dir / "workers").glob("*.json")), "the flight file is removed at a clean close"
    assert client.get("/").text == "hello"  # passes straight through
    assert len(samples()) == 1
    app.close()  # idempotent

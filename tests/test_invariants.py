"""memprof never breaks the host: what the app sends, raises and runs is exactly what it would be without
memprof, even when memprof's own readings fail. Each case runs the same app bare and wrapped and compares
every ASGI message sent, byte for byte."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from memprof import MemprofMiddleware
from memprof import profile as profile_module
from memprof import runtime as runtime_module
from memprof.safety.isolation import errors as internal_errors
from tests.apps import AppError, fastapi_app, starlette_app

Messages = list[dict[str, Any]]

CASES = [
    ("GET", "/", b""),
    ("GET", "/users/5", b""),
    ("GET", "/stream", b""),
    ("GET", "/background", b""),
    ("GET", "/nope", b""),
    ("POST", "/", b"x" * 70_000),
    ("GET", "/api/items/4", b""),
]


async def _call(app: Any, method: str, path: str, body: bytes, disconnect: bool = False) -> Messages:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"token=secret",
        "headers": [(b"host", b"testserver"), (b"cookie", b"sid=abc")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: Messages = []

    async def receive() -> dict[str, Any]:
        if incoming and not disconnect:
            return incoming.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    return sent


def _run(app: Any, method: str, path: str, body: bytes) -> Messages:
    return asyncio.run(_call(app, method, path, body))


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_messages_identical_with_and_without_memprof(
    make_settings: Callable[..., Any], method: str, path: str, body: bytes
) -> None:
    bare = _run(starlette_app(), method, path, body)
    wrapped = _run(MemprofMiddleware(starlette_app(), settings=make_settings()), method, path, body)
    assert wrapped == bare


@pytest.mark.internal_errors_expected
@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_messages_identical_when_readings_fail(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: bytes
) -> None:
    def broken(now_ns: int) -> int:
        raise OSError("statm vanished")

    monkeypatch.setattr(internal_errors, "raise_errors", False)
    monkeypatch.setattr(profile_module, "rss_at", broken)
    monkeypatch.setattr(runtime_module, "rss_at", broken)
    monkeypatch.setattr(runtime_module, "peak_at", broken)
    bare = _run(starlette_app(), method, path, body)
    wrapped = _run(MemprofMiddleware(starlette_app(), settings=make_settings()), method, path, body)
    assert wrapped == bare
    assert internal_errors.total > 0  # the failures were seen and counted, not hidden


@pytest.mark.parametrize("factory", [starlette_app, fastapi_app])
def test_app_exception_is_unchanged(make_settings: Callable[..., Any], factory: Callable[[], Any]) -> None:
    def run(app: Any) -> tuple[BaseException, Messages, list[str]]:
        sent: Messages = []
        try:
            sent = _run(app, "GET", "/boom", b"")
        except BaseException as exc:
            import traceback

            return exc, sent, [f.name for f in traceback.extract_tb(exc.__traceback__)][-3:]
        raise AssertionError("the app did not raise")

    exc_bare, sent_bare, tb_bare = run(factory())
    exc_wrapped, sent_wrapped, tb_wrapped = run(MemprofMiddleware(factory(), settings=make_settings()))
    assert type(exc_wrapped) is type(exc_bare) is AppError
    assert str(exc_wrapped) == str(exc_bare)
    assert tb_wrapped == tb_bare  # the innermost frames are the app's, untouched
    assert sent_wrapped == sent_bare


def test_cancellation_passes_through(make_settings: Callable[..., Any]) -> None:
    async def hangs(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    app = MemprofMiddleware(hangs, settings=make_settings())

    async def main() -> None:
        task = asyncio.create_task(_call(app, "GET", "/", b""))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert app.runtime.inflight == 0 and app.runtime.active == {}


def test_client_disconnect_is_seen_by_the_app(make_settings: Callable[..., Any]) -> None:
    seen: list[str] = []

    async def waits_for_disconnect(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                return

    asyncio.run(
        _call(MemprofMiddleware(waits_for_disconnect, settings=make_settings()), "GET", "/", b"", True)
    )
    assert seen == ["disconnect"]


def test_lifespan_events_pass_through(make_settings: Callable[..., Any]) -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    sent: list[str] = []

    async def main() -> None:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await MemprofMiddleware(app, settings=make_settings())({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


class _Payload:
    """Something the app owns; memprof must not keep it alive."""


def test_app_objects_are_not_kept_alive(make_settings: Callable[..., Any], samples: Any) -> None:
    refs: list[weakref.ref[_Payload]] = []

    async def endpoint(request: Request) -> Response:
        payload = _Payload()
        refs.append(weakref.ref(payload))
        request.state.payload = payload
        request.scope["payload"] = payload
        return PlainTextResponse("ok")

    app = MemprofMiddleware(Starlette(routes=[Route("/", endpoint)]), settings=make_settings())
    for _ in range(3):
        assert _run(app, "GET", "/", b"")[0]["status"] == 200
    assert len(samples()) == 3
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert app.runtime.active == {}

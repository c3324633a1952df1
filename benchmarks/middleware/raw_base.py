"""A bare ASGI app answering ``200 hello``: the cheapest possible endpoint, so memprof's cost stands out."""

from __future__ import annotations

from typing import Any

ASGIApp = Any

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
_BODY = {"type": "http.response.body", "body": b"hello"}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(dict(_START))
    await send(dict(_BODY))


def make_app() -> ASGIApp:
    """The bare raw-ASGI app."""
    return app

"""A trivial Starlette endpoint (``GET /`` -> ``hello``) with no middleware."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def make_app() -> Starlette:
    """The bare Starlette app."""
    return Starlette(routes=[Route("/", hello)])

"""Route templates: the same on every Starlette and FastAPI version the pins allow (``make test-oldest``
runs these on the oldest), for plain routes, mounted apps, nested mounts, host routes and FastAPI
routers; found without the router's help where it does not store the route (Starlette before 0.38)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route, Router
from starlette.testclient import TestClient

from memprof import MemprofMiddleware


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def raw_app(scope: Any, receive: Any, send: Any) -> None:  # a mounted ASGI app without routes
    await PlainTextResponse("raw")(scope, receive, send)


def shop_app() -> Starlette:
    users = APIRouter(prefix="/users")

    @users.get("/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    api = FastAPI()
    api.include_router(users)
    inner = Starlette(routes=[Route("/items/{item_id:int}", ok), Mount("/deep", routes=[Route("/{x}", ok)])])
    return Starlette(
        routes=[
            Route("/", ok),
            Route("/orders/{order_id}", ok, methods=["GET"]),
            Mount("/shop", app=inner),
            Mount("/admin", routes=[Route("/model/{name}", ok)]),
            Mount("/api", app=api),
            Mount("/static", app=raw_app),
            Host("docs.example.com", app=Router(routes=[Route("/page/{slug}", ok)])),
        ]
    )


CASES = [
    ("http://testserver/", 200, "/"),
    ("http://testserver/orders/7", 200, "/orders/{order_id}"),
    ("http://testserver/shop/items/3", 200, "/shop/items/{item_id:int}"),
    ("http://testserver/shop/deep/x1", 200, "/shop/deep/{x}"),
    ("http://testserver/admin/model/user", 200, "/admin/model/{name}"),
    ("http://testserver/api/users/5", 200, "/api/users/{user_id}"),
    ("http://testserver/static/css/site.css", 200, "/static/{path}"),
    ("http://docs.example.com/page/intro", 200, "/page/{slug}"),
    ("http://testserver/nope/123", 404, "<unmatched>"),
    ("http://testserver/shop/nothing", 404, "<unmatched>"),
]


@pytest.mark.parametrize(("url", "status", "template"), CASES)
def test_route_templates(
    url: str, status: int, template: str, make_settings: Callable[..., Any], samples: Any
) -> None:
    with TestClient(MemprofMiddleware(shop_app(), settings=make_settings())) as client:
        assert client.get(url).status_code == status
    (rec,) = samples()
    assert rec["request"]["route"] == template


def test_a_method_the_route_does_not_allow_keeps_its_template(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    with TestClient(MemprofMiddleware(shop_app(), settings=make_settings())) as client:
        assert client.post("/orders/7").status_code == 405
    (rec,) = samples()
    assert rec["request"]["route"] == "/orders/{order_id}"

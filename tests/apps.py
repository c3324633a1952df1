"""Factories of real apps used across the tests."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from memprof import MemprofMiddleware, checkpoint
from memprof.lifecycle import serve

BACKGROUND_DONE: list[str] = []


class AppError(Exception):
    """Raised by the apps' /boom endpoints."""


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def _user(request: Request) -> Response:
    with checkpoint("load_user"):
        data = [0] * 10_000
    checkpoint.mark("after_load")
    return JSONResponse({"id": request.path_params["user_id"], "n": len(data)})


async def _stream(request: Request) -> Response:
    async def body() -> Any:
        for i in range(5):
            yield f"chunk{i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="text/plain", headers={"x-custom": "1"})


async def _boom(request: Request) -> Response:
    raise AppError("the app failed")


async def _background(request: Request) -> Response:
    def work() -> None:
        BACKGROUND_DONE.append(request.url.path)

    return PlainTextResponse("queued", background=BackgroundTask(work))


async def _slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "0.05")))
    profile = request.scope.get("memprof")
    return JSONResponse({"request_id": getattr(profile, "request_id", None)})


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    msg = await websocket.receive_text()
    await websocket.send_text(msg.upper())
    await websocket.close()


def starlette_app() -> Starlette:
    inner = Starlette(routes=[Route("/items/{item_id:int}", _hello)])
    return Starlette(
        routes=[
            Route("/", _hello),
            Route("/users/{user_id}", _user),
            Route("/stream", _stream),
            Route("/boom", _boom),
            Route("/background", _background),
            Route("/slow", _slow),
            WebSocketRoute("/ws", _ws),
            Mount("/api", app=inner),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @checkpoint("compute")
    def compute(n: int) -> int:
        return sum(range(n))

    @app.get("/sync/{n}")
    def sync_endpoint(n: int) -> dict[str, int]:
        return {"total": compute(n)}

    @app.get("/boom")
    async def boom() -> None:
        raise AppError("fastapi failed")

    return app


def serving(app: MemprofMiddleware) -> MemprofMiddleware:
    """What a server's first call does (a lifespan start-up or a request): memprof starts serving in this
    process. Building the middleware alone starts nothing (memprof.lifecycle)."""
    serve(app.runtime)
    return app

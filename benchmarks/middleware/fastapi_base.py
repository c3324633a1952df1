"""A trivial FastAPI endpoint (``GET /`` -> ``{"hello": "world"}``) with no middleware."""

from __future__ import annotations

from fastapi import FastAPI


def make_app() -> FastAPI:
    """The bare FastAPI app."""
    app = FastAPI()

    @app.get("/")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app

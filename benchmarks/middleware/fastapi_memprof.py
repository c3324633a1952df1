"""The FastAPI app of ``fastapi_base`` with MemprofMiddleware added the Starlette way."""

from __future__ import annotations

from fastapi import FastAPI

from benchmarks.middleware import fastapi_base
from memprof import MemprofMiddleware, MemprofSettings


def make_app(settings: MemprofSettings) -> FastAPI:
    """``fastapi_base``'s app with ``app.add_middleware(MemprofMiddleware, settings=settings)``."""
    app = fastapi_base.make_app()
    app.add_middleware(MemprofMiddleware, settings=settings)
    return app

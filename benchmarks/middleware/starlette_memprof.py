"""The Starlette app of ``starlette_base`` with MemprofMiddleware added the Starlette way."""

from __future__ import annotations

from starlette.applications import Starlette

from benchmarks.middleware import starlette_base
from memprof import MemprofMiddleware, MemprofSettings


def make_app(settings: MemprofSettings) -> Starlette:
    """``starlette_base``'s app with ``app.add_middleware(MemprofMiddleware, settings=settings)``."""
    app = starlette_base.make_app()
    app.add_middleware(MemprofMiddleware, settings=settings)
    return app

"""An app module with an lru_cache(maxsize=None) that only grows: one ~46 KB entry per distinct page."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import JSONResponse


@functools.cache
def render(n: int) -> list[str]:
    return [f"line {n}:{i} " + "x" * 16 for i in range(600)]


def page(request: Request) -> JSONResponse:
    return JSONResponse({"lines": len(render(int(request.path_params["n"])))})

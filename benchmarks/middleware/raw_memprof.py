"""The raw ASGI app of ``raw_base`` wrapped in MemprofMiddleware."""

from __future__ import annotations

from typing import Any

from benchmarks.middleware import raw_base
from memprof import MemprofMiddleware, MemprofSettings


def make_app(settings: MemprofSettings) -> Any:
    """``raw_base``'s app behind memprof with ``settings``."""
    return MemprofMiddleware(raw_base.make_app(), settings=settings)

"""Testing helpers: the pytest plugin, a profiled test client, and the reproduction harness.

``from memprof.testing import ProfiledClient, profile_of, reproduce`` (imported on first use, so that
the pytest plugin, which lives in this package, stays cheap to load).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memprof.testing.client import ProfiledClient, ResponseProfile, profile_of
    from memprof.testing.fit import Fit, linear_fit

_LAZY = {
    "ProfiledClient": "memprof.testing.client",
    "ResponseProfile": "memprof.testing.client",
    "profile_of": "memprof.testing.client",
    "Fit": "memprof.testing.fit",
    "linear_fit": "memprof.testing.fit",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memprof.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

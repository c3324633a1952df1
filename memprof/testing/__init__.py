"""Testing helpers: the pytest plugin, a profiled test client, and the reproduction harness.

``from memprof.testing import ProfiledClient, profile_of, reproduce, Variable``. Names are imported on
first use, so that the pytest plugin, which lives in this package, stays cheap to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memprof.testing.client import ProfiledClient, ResponseProfile, profile_of
    from memprof.testing.fit import Fit, linear_fit
    from memprof.testing.harness import ReproduceError, reproduce
    from memprof.testing.results import Measurement, ReproductionResult, VariableEffect, VariantResult
    from memprof.testing.variables import Context, RequestSpec, Variable

__all__ = [
    "Context",
    "Fit",
    "Measurement",
    "ProfiledClient",
    "ReproduceError",
    "ReproductionResult",
    "RequestSpec",
    "ResponseProfile",
    "Variable",
    "VariableEffect",
    "VariantResult",
    "linear_fit",
    "profile_of",
    "reproduce",
]

_MODULES = {
    "ProfiledClient": "client",
    "ResponseProfile": "client",
    "profile_of": "client",
    "Fit": "fit",
    "linear_fit": "fit",
    "ReproduceError": "harness",
    "reproduce": "harness",
    "Measurement": "results",
    "ReproductionResult": "results",
    "VariableEffect": "results",
    "VariantResult": "results",
    "Context": "variables",
    "RequestSpec": "variables",
    "Variable": "variables",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'memprof.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"memprof.testing.{module}"), name)

"""Import an object named ``module:attribute`` (apps, hooks), with one clear error when it fails."""

from __future__ import annotations

import importlib
from typing import Any


def load_app(spec: str, what: str = "app") -> Any:
    """Import ``module:attribute`` (dots allowed in the attribute); a clear error when it fails."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} does not name the {what}: expected MODULE:ATTRIBUTE, e.g. myapp.main:app")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for the {what} {spec!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (the {what} {spec!r})") from None
    return obj

"""Route templates: how a request is grouped (``/users/{user_id}``, not 683 raw paths)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]


def route_template(scope: Scope) -> str:
    """The route template of a handled request (``/users/{user_id}``), mounts included.

    Starlette's router stores the matched route in ``scope["route"]`` and grows ``root_path`` for each
    mount. With no router the raw path is used; with a router but no match, ``<unmatched>`` (raw paths
    of 404s would explode the number of routes).
    """
    route = scope.get("route")
    template = getattr(route, "path", None) if route is not None else None
    if isinstance(template, str):
        prefix = scope.get("root_path", "") or ""
        app_root = scope.get("app_root_path", "") or ""
        if prefix.startswith(app_root):
            prefix = prefix[len(app_root) :]
        return (prefix.rstrip("/") + template) or "/"
    if "router" in scope:
        return "<unmatched>"
    return str(scope.get("path", ""))

"""Route templates: how a request is grouped (``/users/{user_id}``, not 683 raw paths)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]

_FULL = 2  # starlette.routing.Match.FULL and PARTIAL (an Enum): compared by value, no import
_PARTIAL = 1
_MAX_MOUNTS = 16  # mounts within mounts followed at most


def _template(route: Any, scope: Scope) -> str | None:
    """``route``'s template below the mounts that ``scope``'s ``root_path`` grew by."""
    template = getattr(route, "path", None) if route is not None else None
    if not isinstance(template, str):
        return None
    prefix = scope.get("root_path", "") or ""
    app_root = scope.get("app_root_path", "") or ""
    if prefix.startswith(app_root):
        prefix = prefix[len(app_root) :]
    if hasattr(route, "routes"):  # a Mount matched last: ``root_path`` already ends with its path
        if route.routes:
            return None  # its own routes matched nothing (a 404 inside a mounted app)
        prefix = prefix[: -len(template)] if template and prefix.endswith(template) else prefix
        template += "/{path}"  # a mounted ASGI app without routes (static files)
    return (prefix.rstrip("/") + template) or "/"


def route_template(scope: Scope) -> str:
    """The route template of a handled request (``/users/{user_id}``), mounts included, from what the
    router stored in ``scope`` (cheap: for in-flight and unprofiled requests).

    Starlette's router (1.x; FastAPI's routes on every version) stores the matched route in
    ``scope["route"]`` and grows ``root_path`` for each mount. With no router the raw path is used; with a
    router but no match, ``<unmatched>`` (raw paths of 404s would explode the number of routes).
    """
    found = _template(scope.get("route"), scope)
    if found is not None:
        return found
    if "router" in scope:
        return "<unmatched>"
    return str(scope.get("path", ""))


def find_route_template(scope: Scope) -> str:
    """:func:`route_template`, and when the router did not store the route (plain Starlette routes and
    mounts before Starlette 0.38), the route its table matches, found again the way the router found it.
    Once per profiled request, at its end: never on unprofiled ones."""
    found = _template(scope.get("route"), scope)
    if found is not None:
        return found
    router = scope.get("router")
    if router is None:
        return str(scope.get("path", ""))
    try:
        found = _match(router, scope)
    except Exception:  # a route's own matching failed: the request stays unmatched
        found = None
    return "<unmatched>" if found is None else found


def _match(router: Any, scope: Scope) -> str | None:
    """Match ``scope``'s path against ``router``'s routes (and the routes of the mounts and hosts it
    matches) on a copy of the scope as it was before routing; the template of the innermost match."""
    root = scope.get("app_root_path", scope.get("root_path", "")) or ""
    view: dict[str, Any] = {
        "type": scope.get("type", "http"),
        "path": scope.get("path", ""),
        "root_path": root,
        "method": scope.get("method", "GET"),
        "headers": scope.get("headers") or [],
    }
    routes = getattr(router, "routes", None)
    matched: Any = None
    for _ in range(_MAX_MOUNTS):
        if not routes:
            break
        best: tuple[Any, Any] | None = None
        for route in routes:
            match, child = route.matches(view)
            match = getattr(match, "value", match)
            if match == _FULL:
                best = (route, child)
                break
            if match == _PARTIAL and best is None:
                best = (route, child)
        if best is None:
            break
        matched, child = best
        view.update(child)
        routes = getattr(matched, "routes", None)  # a Mount's or a Host's own routes
    return None if matched is None else _template(matched, view)

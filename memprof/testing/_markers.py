"""The plugin's markers: their documentation, argument parsing, and the checks they make.

Each check returns failure messages (strings) instead of raising, so the plugin can put them on the test
report. Nothing here imports the app-facing parts of memprof: the plugin stays cheap when unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from memprof._units import format_size, parse_size

if TYPE_CHECKING:
    from memprof.testing.client import ResponseProfile

MARKERS = {
    "memory_limit": "memory_limit(limit): fail when the test allocates more than `limit` above what was "
    "allocated at its start (peak of Python allocations traced by tracemalloc), e.g. memory_limit('50 MB').",
    "no_memory_growth": "no_memory_growth(iterations=None, warmup=None, tolerance=None): run the test body "
    "`warmup` times, then `iterations` times with gc.collect() after each; fail when traced memory keeps "
    "growing by more than `tolerance` per iteration or some object type grows in every iteration.",
    "max_queries": "max_queries(n): fail when a request made through memprof_client executes more than n "
    "SQL statements (needs memprof's SQLAlchemy integration).",
    "max_instances": "max_instances(n): fail when a request made through memprof_client loads more than n "
    "ORM instances (needs memprof's SQLAlchemy integration).",
}


class MarkerError(ValueError):
    """A marker was given arguments it cannot use; the message names the marker and the problem."""


def marker_arg(marker: pytest.Mark, name: str, position: int = 0) -> Any:
    """The argument ``name`` of a marker, given by position or keyword (None when absent)."""
    if name in marker.kwargs:
        return marker.kwargs[name]
    if len(marker.args) > position:
        return marker.args[position]
    return None


def limit_of(marker: pytest.Mark) -> int:
    """The byte limit of ``memory_limit(...)``."""
    value = marker_arg(marker, "limit")
    if value is None:
        raise MarkerError("memory_limit needs a limit, e.g. @pytest.mark.memory_limit('50 MB')")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise MarkerError(f"memory_limit: {exc}") from None


def count_of(marker: pytest.Mark) -> int:
    """The ``n`` of ``max_queries(n)`` / ``max_instances(n)``."""
    value = marker_arg(marker, "n")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MarkerError(
            f"{marker.name} needs a whole number >= 0, e.g. @pytest.mark.{marker.name}(10); got {value!r}"
        )
    return value


def positive_int(marker: pytest.Mark, name: str, position: int, default: int, minimum: int) -> int:
    """An integer argument of a marker, with the option/ini default and a lower bound."""
    value = marker_arg(marker, name, position)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MarkerError(f"{marker.name}: {name} must be a whole number >= {minimum}; got {value!r}")
    return value


def check_limit(peak: int, limit: int, sites: Sequence[tuple[str, int, int]]) -> str:
    """The failure message of a test whose traced peak went over its memory limit."""
    lines = [
        f"memory_limit: the test allocated {format_size(peak)} at its peak, over its limit of "
        f"{format_size(limit)} (Python allocations traced by tracemalloc, above the start of the test)"
    ]
    if sites:
        lines.append("largest allocation sites still alive at the end of the test:")
        lines.extend(f"  {where}: {format_size(size)} in {count} blocks" for where, size, count in sites)
    return "\n".join(lines)


def check_requests(kind: str, limit: int, profiles: Sequence[ResponseProfile] | None, top: int) -> list[str]:
    """Failures of ``max_queries``/``max_instances`` over the requests a test made through memprof_client."""
    if not profiles:
        return [
            f"{kind}({limit}): no request went through memprof_client, so there is nothing to check: "
            "make the requests with the memprof_client fixture"
        ]
    counted = [(p, _count(kind, p)) for p in profiles]
    measured = [(p, n) for p, n in counted if n is not None]
    if not measured:
        return [
            f"{kind}({limit}): none of the {len(profiles)} requests carried "
            f"{'query' if kind == 'max_queries' else 'ORM model'} data: instrument SQLAlchemy with "
            "memprof's SQLAlchemy integration before making the requests"
        ]
    out = []
    for profile, n in measured:
        assert n is not None
        if n > limit:
            out.append(
                f"{kind}({limit}): {_describe_request(profile)} {_what(kind, n)}\n{_detail(kind, profile, top)}"
            )
    return out


def _count(kind: str, profile: ResponseProfile) -> int | None:
    return profile.query_count if kind == "max_queries" else profile.instances


def _what(kind: str, n: int) -> str:
    return f"executed {n} SQL statements" if kind == "max_queries" else f"loaded {n} ORM instances"


def _describe_request(profile: ResponseProfile) -> str:
    req = profile.request
    return f"{req.get('method')} {req.get('path')} (route {req.get('route')}, status {req.get('status')})"


def _detail(kind: str, profile: ResponseProfile, top: int) -> str:
    if kind == "max_instances":
        ranked = sorted(profile.instances_by_class.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"  {name}: {n} loaded" for name, n in ranked)
    queries = profile.queries or {}
    statements = [s for s in queries.get("statements") or [] if isinstance(s, dict)]
    statements.sort(key=lambda s: -int(s.get("count", 0) or 0))
    lines = []
    for stmt in statements[:top]:
        sql = " ".join(str(stmt.get("sql", "")).split())
        lines.append(f"  {stmt.get('count')}x {sql[:160]}")
    return "\n".join(lines)

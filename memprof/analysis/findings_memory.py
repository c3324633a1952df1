"""Findings about memory a process keeps: leaks (a worker's resting memory keeps rising, charged to the
routes whose requests retain it), caches that only grow, and routes whose memory follows the caller's data.
Pure functions of aggregates (:mod:`memprof.analysis.trend`, :mod:`memprof.analysis.details`)."""

from __future__ import annotations

import sys
from typing import Any

from memprof.analysis.findings_sql import finding
from memprof.analysis.thresholds import KIB, MIB

CAUSE_SHARE = 0.1
"""A cache is named as a leak's cause when its growth holds at least this share of the rise."""
RETAINED_SHARE = 0.6
"""A route is charged with a leak when its median request retains memory and this share of its requests
retain some (readings shared between short requests make some retain nothing visible: see analysis.trend)."""
LARGE_CACHE_GROWTH = 10
"""Two observations suffice when a cache grew by this many times ``cache_min_growth`` entries, or by 1 MiB."""


def is_library_cache(name: str, kind: str | None = None) -> bool:
    """A cache of the standard library, memprof's own, or SQLAlchemy's (bounded by design): left out of the
    default views (``--all`` shows them)."""
    top = (name or "").split(".", 1)[0]
    if top == "memprof":
        return not name.startswith("memprof.demo")
    return (
        top in sys.stdlib_module_names
        or top in ("sqlalchemy", "pydantic", "starlette", "fastapi")
        or (kind or "").startswith("sqlalchemy")
    )


def _fmt(n: float) -> str:
    return f"{n / MIB:.1f} MiB" if abs(n) >= MIB else f"{n / KIB:.1f} KiB"


def leak(
    trends: list[dict[str, Any]], retained: list[dict[str, Any]], caches: list[dict[str, Any]],
    dumps: list[dict[str, Any]], *,
    min_growth: int = 2 * MIB, min_samples: int = 40, min_fit: float = 0.5, show_all: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Workers whose resting memory (heap at request start where recorded, else RSS) keeps rising at a
    steady rate: the four quarter medians rise, the last quarter at least half as steeply as the third
    (warm-up levels off), the second half fits a line (R² >= ``min_fit``) and the last three quarters rose by ``min_growth``
    or more. Only a steady process: its requests retained at least half the rise (growth outside requests
    is not theirs) and most of its samples are on routes it serves five times or more (not a test session).
    One finding per route charged (the route whose requests retain most, consistently), for all workers."""
    by_cause: dict[str, dict[str, Any]] = {}
    for w in trends:
        q = w["quarters"]
        if w["samples"] < min_samples or len(q) != 4 or not (q[0] < q[1] < q[2] < q[3]):
            continue
        rise, s1, s2 = q[3] - q[0], float(w["slope_first"] or 0), float(w["slope_second"] or 0)
        if (
            q[3] - q[1] < max(min_growth, 0.01 * q[1])
            or s2 <= 0
            or s2 < 0.5 * s1
            or (w["fit_second"] or 0) < min_fit
        ):
            continue
        if w["retained"] < 0.5 * (w["last"] - w["first"]) or w["steady_share"] < 0.5:
            continue
        mine = [r for r in retained if r["worker"] == w["worker"] and r["requests"] >= 5]
        charged = [r for r in mine if (r["median"] or 0) > 0 and r["positive"] >= RETAINED_SHARE]
        route = charged[0] if charged else None
        key = route["route"] if route else "(no route retains it consistently)"
        cause = by_cause.setdefault(key, {"route": route, "workers": [], "refs": []})
        cause["workers"].append({**w, "rise": rise, "per_request": s2})
        cause["refs"] += [w["first_ref"], w["last_ref"], *([route["ref"]] if route else [])]
    out = []
    for key, cause in by_cause.items():
        ws, route = cause["workers"], cause["route"]
        w = max(ws, key=lambda x: x["rise"])
        q, per_request = w["quarters"], w["per_request"]
        span = w["t1"] - w["t0"]
        grows = _growing_caches(caches, [x["worker"] for x in ws], w["last"] - w["first"], show_all)
        grows = _growing_objects(dumps, [x["worker"] for x in ws]) + grows
        near = bool(w["limit"] and w["rss_last"] and w["rss_last"] >= 0.8 * w["limit"])
        what = (f"; requests to {key} retain {_fmt(route['median'])} each ({route['positive']:.0%} of "
                f"{route['requests']} requests)" if route else "")  # fmt: skip
        cached = f"; growing: {', '.join(g['name'] for g in grows[:3])}" if grows else ""
        label = "heap" if w["source"] == "heap" else "RSS"
        out.append(
            finding(
                "leak",
                "critical" if near else "warning",
                f"Leak: resting {label} rises steadily, {q[0] / MIB:.1f} -> {q[3] / MIB:.1f} MiB (quarter "
                f"medians) over {w['samples']} requests in {span / 60:.1f} min, +{_fmt(per_request)} per request"
                f"{what}{cached}" + (f" ({len(ws)} workers)" if len(ws) > 1 else ""),
                key,
                {
                    "route": route["route"] if route else None,
                    "retained_per_request": int(route["median"]) if route else None,
                    "retained_share": round(route["positive"], 3) if route else None,
                    "source": w["source"],
                    "workers": sorted(x["worker"] for x in ws),
                    "samples": w["samples"],
                    "quarter_medians": [int(v) for v in q],
                    "growth_per_request": round(per_request, 1),
                    "growth_per_hour": round(per_request * w["samples"] / span * 3600, 1)
                    if span >= 3600
                    else None,
                    "span_s": round(span, 1),
                    "rss_first": w["rss_first"],
                    "rss_last": w["rss_last"],
                    "limit": w["limit"],
                    "growing": grows[:5],
                    "impact_bytes": int(sum(x["rise"] for x in ws)),
                },
                cause["refs"],
                (
                    f"Requests to {key} keep memory after they end: find what they append to module-level lists "
                    "or dicts, caches without a bound, objects kept on app.state or class attributes, Sessions "
                    "never closed. "
                    if route
                    else "Find what keeps references across requests (module-level "
                    "lists and dicts, unbounded caches, Sessions never closed). "
                )
                + "Compare the object counts of two dumps (`memprof analyze --pattern TYPE`); meanwhile "
                "recycle workers (gunicorn `--max-requests`).",
            )
        )
    return out


def _growing_caches(
    caches: list[dict[str, Any]], workers: list[str], rise: int, show_all: bool
) -> list[dict[str, Any]]:
    """Caches of these workers that only grew, by enough to explain part of the rise (bytes known), or by
    many entries while unbounded (bytes not recorded)."""
    out = []
    for c in caches:
        if c["worker"] not in workers or c["last"] <= c["first"] or c["decreases"]:
            continue
        if not show_all and is_library_cache(c["name"], c["kind"]):
            continue
        grown = (c.get("bytes_last") or 0) - (c.get("bytes_first") or 0)
        if c.get("bytes_last") is not None and grown < CAUSE_SHARE * rise:
            continue
        if c.get("bytes_last") is None and not (c["unbounded"] and c["last"] - c["first"] >= 100):
            continue
        out.append({"name": f"cache {c['name']}", "first": c["first"], "last": c["last"],
                    "bytes": c.get("bytes_last"), "ref": c["refs"][1]})  # fmt: skip
    return sorted(out, key=lambda g: (-(g["bytes"] or 0), -(g["last"] - g["first"])))


def _growing_objects(dumps: list[dict[str, Any]], workers: list[str]) -> list[dict[str, Any]]:
    """Object types that grew markedly between a worker's first and last dump (by 1,000 and half their
    first count or more), most first."""
    out = []
    for worker in workers:
        mine = sorted((d for d in dumps if d["worker"] == worker), key=lambda d: d["time"] or 0)
        if len(mine) >= 2:
            first, last = mine[0]["objects"], mine[-1]["objects"]
            out += [{"name": f"{typ} objects", "first": first.get(typ, 0), "last": n, "bytes": None,
                     "ref": mine[-1]["ref"]} for typ, n in last.items()
                    if n - first.get(typ, 0) >= max(1000, 0.5 * first.get(typ, 0))]  # fmt: skip
    return sorted(out, key=lambda g: -(g["last"] - g["first"]))[:3]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def unbounded_cache(
    caches: list[dict[str, Any]], *, min_growth: int = 100, show_all: bool = False
) -> list[dict[str, Any]]:
    """A cache without a maxsize that never shrank and grew by ``min_growth`` entries or more: seen three
    times or more, or twice when the growth is large (ten times ``min_growth`` entries, or 1 MiB). Library
    caches only with ``show_all``."""
    out = []
    for agg in caches:
        first, last = agg["first"], agg["last"]
        if not agg["unbounded"] or agg["decreases"] or last - first < min_growth:
            continue
        if not show_all and is_library_cache(agg["name"], agg["kind"]):
            continue
        grown = (agg.get("bytes_last") or 0) - (agg.get("bytes_first") or 0)
        large = last - first >= LARGE_CACHE_GROWTH * min_growth or grown >= MIB
        if agg["observations"] < (2 if large else 3):
            continue
        span = agg["span_s"]
        held = f", holding about {_fmt(agg['bytes_last'])}" if agg.get("bytes_last") else ""
        out.append(
            finding(
                "unbounded_cache",
                "warning",
                f"Cache {agg['name']} only grows: {first} -> {last} entries in {_duration(span)}{held}",
                agg["name"],
                {
                    "name": agg["name"],
                    "kind": agg["kind"],
                    "worker": agg["worker"],
                    "first": first,
                    "last": last,
                    "observations": agg["observations"],
                    "span_s": round(span, 3),
                    "bytes_estimate": agg.get("bytes_last"),
                    "per_hour": round((last - first) / (span / 3600.0), 1) if span >= 3600 else None,
                    "impact_bytes": int(agg.get("bytes_last") or 0),
                },
                agg["refs"],
                "Bound it: `functools.lru_cache(maxsize=1024)` instead of `maxsize=None`/`functools.cache`, or a "
                "cachetools LRUCache/TTLCache; never key a cache on unbounded values (user ids, raw paths, "
                "query strings). For SQLAlchemy's compiled cache, stop building statements that differ per "
                "call (literal values, growing IN lists: use bound parameters).",
            )
        )
    return out

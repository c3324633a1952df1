"""From the tables to the summary: every section computed by SQL (:mod:`aggregates`, :mod:`details`), and
the :class:`Facts` the findings are judged on. Plain data out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from memprof.analysis import aggregates as agg
from memprof.analysis import details, sites, spread, trend, variance
from memprof.analysis.aggregates import Refs
from memprof.analysis.engine import Engine
from memprof.analysis.sql_status import sql_status

TOP = 10
_LIBRARY_MARKERS = ("/lib/python3", "site-packages/", "dist-packages/", "<frozen ", "\\lib\\python3")


def is_library_frame(frame: str) -> bool:
    """Whether a ``file:line in func`` frame is in the standard library, an installed package or memprof
    itself (its bundled demo app aside)."""
    path = frame.replace("\\", "/")
    own = ("/memprof/" in path or path.startswith("memprof/")) and "memprof/demo/" not in path
    return own or any(marker in frame for marker in _LIBRARY_MARKERS)


@dataclass
class Facts:
    """What the findings are judged on: summary sections plus the full aggregates behind them."""

    samples: int
    threshold: int
    routes: list[dict[str, Any]]
    sessions: dict[str, Any] | None
    statements: list[dict[str, Any]]
    scopes: list[dict[str, Any]]
    caches: list[dict[str, Any]]
    dumps: list[dict[str, Any]]
    crashes: list[dict[str, Any]]
    high: list[dict[str, Any]]
    families: list[dict[str, Any]] = field(default_factory=list)
    leak: list[dict[str, Any]] = field(default_factory=list)
    variance: list[dict[str, Any]] = field(default_factory=list)
    retained: list[dict[str, Any]] = field(default_factory=list)
    sites: list[dict[str, Any]] = field(default_factory=list)
    limit: int | None = None


def _dump_routes(dumps: list[dict[str, Any]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for d in dumps:
        for r in dict.fromkeys([d["route"], *(d["inflight"] or ())]):
            if r is not None:
                out[str(r)] += 1
    return out


def dumps_section(dumps: list[dict[str, Any]], frames: list[tuple[str, int]]) -> dict[str, Any]:
    """Dumps: by trigger, the routes and phases they were taken in, the most common frames, objects."""
    triggers = Counter(str(d["trigger"]) for d in dumps)
    phases = Counter(str(d["phase"]) for d in dumps if d["phase"])
    latest = dumps[-1]["objects"] if dumps else {}
    return {
        "count": len(dumps),
        "dropped": 0,
        "by_trigger": dict(sorted(triggers.items())),
        "routes": dict(_dump_routes(dumps).most_common(TOP)),
        "phases": dict(phases.most_common(TOP)),
        "frames": [
            {"frame": f, "dumps": n, "library": is_library_frame(f)}
            for f, n in sorted(frames, key=lambda fn: (is_library_frame(fn[0]), -fn[1], fn[0]))[:15]
        ],
        "objects_latest": dict(list(latest.items())[:15]),
        "list": [{k: v for k, v in d.items() if k != "objects"} for d in dumps[-50:]],
    }


def sql_section(statements: list[dict[str, Any]], models: list[dict[str, Any]], scopes: list[dict[str, Any]],
                engines: list[dict[str, Any]]) -> dict[str, Any] | None:  # fmt: skip
    """SQL hot spots: statements by time and by memory, models loaded, loader criteria, engines."""
    if not statements and not models and not scopes:
        return None
    ran = [st for st in statements if st["requests"]]
    by_time = sorted(ran, key=lambda st: (-st["total_ms"], st["sql"]))[:TOP]
    by_memory = sorted(ran, key=lambda st: (-st["max_rss_delta"], -st["instances"], st["sql"]))[:TOP]
    return {
        "distinct_statements": len(statements),
        "dropped_statements": 0,
        "by_time": [details.statement_row(st) for st in by_time],
        "by_memory": [details.statement_row(st) for st in by_memory],
        "models": sorted(models, key=lambda m: (-m["loaded"], m["model"]))[:TOP],
        "scopes": sorted(scopes, key=lambda x: (-x["applied"], x["model"], x["criteria"]))[:TOP],
        "engines": engines,
    }


def build(
    e: Engine, refs: Refs, leak_min_samples: int, variance_min_samples: int, n_plus_one: int = 10
) -> tuple[dict[str, Any], Facts]:
    """The summary sections (without input, filters and findings) and the facts for the findings."""
    base = agg.overall(e)
    threshold = agg.high_threshold(base["memory"])
    dumps = details.dumps(e, refs)
    workers = agg.worker_rows(e)
    routes = agg.route_rows(e, refs, threshold, _dump_routes(dumps))
    values = spread.route_values(e)
    for r in routes:
        r["growth_sample"] = values.get(r["route"], [])
    statements = details.statements(e, refs)
    scopes = details.scopes(e, refs)
    sessions = details.sessions(e, refs)
    caches = details.caches(e, refs)
    crashes = details.crashes(e, refs)
    high = agg.high_samples(e, refs)
    families = agg.families(e, threshold) if base["samples"] else []
    total = base["samples"]
    standing = [  # the families that could stand out: the rest of the traffic is their yardstick
        fam
        for fam in families
        if fam["requests"] >= 5
        and fam["requests"] <= 0.5 * total
        and (fam["high"] >= 5 or fam["objects_p50"])
    ]
    rests = agg.family_rests(e, standing, total)
    for fam in standing:
        fam["rest"] = rests[fam["family"]]
    summary = {
        **base,
        "limit": agg.common_limit(workers),
        "high_memory": {"metric": "growth", "threshold": threshold, "top": high[:TOP]},
        "routes": routes,
        "phases": agg.phase_rows(e, refs, threshold),
        "workers": workers,
        "sessions": sessions,
        "sql": sql_section(statements, details.models(e, refs), scopes, details.engines(e)),
        "sql_status": sql_status(
            total, int(e.value("SELECT coalesce(sum(query_count), 0) FROM samples") or 0), len(statements)
        ),
        "dumps": dumps_section(dumps, details.dump_frames(e)),
        "crashes": crashes,
        "caches": caches,
        "sql_outside_requests": details.sql_outside(e, refs),
    }
    ordered = trend.order_requests(e, leak_min_samples)
    trends = trend.worker_trends(e, refs, ordered)
    facts = Facts(
        samples=total, threshold=threshold, routes=routes, sessions=sessions, statements=statements, scopes=scopes,
        caches=caches, dumps=dumps, crashes=crashes, high=high, families=families,
        leak=trends, variance=variance.route_variance(e, refs, variance_min_samples),
        retained=trend.retained_by_route(e, refs, ordered),
        sites=sites.n_plus_one_sites(e, refs, n_plus_one), limit=agg.common_limit(workers),
    )  # fmt: skip
    return summary, facts

"""From accumulated records to the summary: statistics overall and per route, phases, workers, sessions,
SQL and model hot spots, dumps, crashes and caches. Pure: a Collector in, plain data out."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from typing import Any

from memprof.analysis.collect import Collector
from memprof.analysis.sqlagg import StatementAgg
from memprof.analysis.stats import describe, describe_sorted, downsample

HIGH_PERCENTILE = 95
TOP = 10


def high_threshold(c: Collector) -> int:
    """Growth (bytes) at and above which a sample counts as high-memory: the overall p95, at least 1 byte."""
    return max(int(c.overall("growth")[f"p{HIGH_PERCENTILE}"]), 1)


def memory_stats(c: Collector) -> dict[str, Any]:
    return {"rss": c.overall("rss"), "growth": c.overall("growth")}


def _dump_routes(c: Collector) -> Counter[str]:
    out: Counter[str] = Counter()
    for d in c.events.dumps:
        for r in {d["route"], *d["inflight"]} - {None}:
            out[str(r)] += 1
    return out


def route_rows(c: Collector, threshold: int) -> list[dict[str, Any]]:
    dumps = _dump_routes(c)
    rows: list[dict[str, Any]] = []
    for route, acc in c.routes.items():
        growth = acc.sorted_column("growth")
        high = len(growth) - bisect_left(growth, threshold)
        rows.append(
            {
                "route": route,
                "count": len(acc.growth),
                "rss": describe_sorted(acc.sorted_column("rss", keep=False)),
                "growth": describe_sorted(growth),
                "duration_ms": {
                    k: round(float(v), 3)
                    for k, v in describe_sorted(acc.sorted_column("duration", keep=False)).items()
                    if k in ("p50", "p95", "max")
                },
                "high": high,
                "dumps": dumps.get(route, 0),
                "errors": acc.errors,
                "statuses": {str(k): v for k, v in sorted(acc.statuses.items())},
                "max_ref": acc.max_ref[1] if acc.max_ref else None,
            }
        )
    total_high = sum(r["high"] for r in rows) or 1
    for r in rows:
        r["high_share"] = round(r["high"] / total_high, 4)
    rows.sort(key=lambda r: (-r["high"], -r["growth"]["p95"], r["route"]))
    return rows


def phase_rows(c: Collector, threshold: int) -> list[dict[str, Any]]:
    return c.phases.rows(threshold, c.ref)


def worker_rows(c: Collector) -> list[dict[str, Any]]:
    rows = []
    for name, w in sorted(c.workers.items()):
        order = w.order()
        rows.append(
            {
                "worker": name,
                "samples": len(order),
                "first_time": w.time[order[0]],
                "last_time": w.time[order[-1]],
                "rss_first": w.rss[order[0]],
                "rss_last": w.rss[order[-1]],
                "rss_max": max(w.rss),
                "limit": w.limit,
            }
        )
    return rows


def series(c: Collector, points: int = 600) -> dict[str, list[tuple[float, float]]]:
    """RSS over time per worker, at most ``points`` points each (peaks kept), for charts."""
    out = {}
    for name, w in sorted(c.workers.items()):
        order = w.order()
        xs = [w.time[i] for i in order]
        ys = [float(w.rss[i]) for i in order]
        out[name] = downsample(xs, ys, points)
    return out


def statement_row(sql: str, agg: StatementAgg) -> dict[str, Any]:
    return {
        "sql": sql,
        "executions": agg.executions,
        "requests": agg.requests,
        "total_ms": round(agg.total_ms, 3),
        "max_ms": round(agg.max_ms, 3),
        "max_per_request": agg.max_count,
        "rows": agg.rows,
        "instances": agg.instances,
        "max_rss_delta": agg.max_rss_delta,
        "lazy": agg.lazy,
        "n_plus_one_requests": agg.n_plus_one,
        "frame": agg.frames.most_common(1)[0][0] if agg.frames else None,
        "routes": [r for r, _ in agg.routes.most_common(3)],
        "ref": agg.worst_ref,
    }


def sql_section(c: Collector) -> dict[str, Any] | None:
    s = c.sql
    if not s.statements and not s.models and not s.scopes:
        return None
    items = [(sql, a) for sql, a in s.statements.items() if a.requests]
    by_time = sorted(items, key=lambda kv: (-kv[1].total_ms, kv[0]))[:TOP]
    by_memory = sorted(items, key=lambda kv: (-kv[1].max_rss_delta, -kv[1].instances, kv[0]))[:TOP]
    models = sorted(s.models.items(), key=lambda kv: (-kv[1]["loaded"], kv[0]))[:TOP]
    scopes = sorted(s.scopes.items(), key=lambda kv: (-kv[1]["applied"], kv[0]))[:TOP]
    return {
        "distinct_statements": len(s.statements),
        "dropped_statements": s.dropped_statements,
        "by_time": [statement_row(sql, a) for sql, a in by_time],
        "by_memory": [statement_row(sql, a) for sql, a in by_memory],
        "models": [
            {
                "model": name,
                **{k: v for k, v in a.items() if k != "routes"},
                "routes": [r for r, _ in a["routes"].most_common(3)],
            }
            for name, a in models
        ],
        "scopes": [
            {
                "model": cls,
                "criteria": crit,
                **{k: v for k, v in a.items() if k != "routes"},
                "routes": [r for r, _ in a["routes"].most_common(3)],
            }
            for (cls, crit), a in scopes
        ],
        "engines": [
            {
                "worker": a["worker"],
                "name": a["name"],
                "compiled_cache": a["last"][1],
                "max": a["max"],
                "maxsize": a["maxsize"],
                "observations": a["observations"],
            }
            for _k, a in sorted(s.engines.items())
        ],
    }


def session_section(c: Collector) -> dict[str, Any] | None:
    s = c.sql
    if not s.session_count:
        return None
    sizes = array("q")
    for acc in c.routes.values():
        sizes.extend(v for v in acc.session if v >= 0)
    keys = sorted(s.session_keys.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP]
    growing = [
        {
            "id_hash": h,
            "first": v[1],
            "last": v[3],
            "max": v[5],
            "requests": v[4],
            "growth": v[3] - v[1],
            "ref": v[6],
        }
        for h, v in s.sessions.items()
        if v[4] >= 2 and v[3] > v[1]
    ]
    growing.sort(key=lambda g: (-g["growth"], g["id_hash"]))
    # Where growing sessions reached their maximum: the route whose requests make them grow.
    grown_on: dict[str, int] = {}
    for v in s.sessions.values():
        if v[4] >= 2 and v[3] > v[1]:
            grown_on[v[7]] = grown_on.get(v[7], 0) + v[5] - v[1]
    return {
        "requests": s.session_count,
        "size": describe(sizes),
        "largest_keys": [{"key": k, "max_size": v[0], "seen": v[1], "ref": v[2]} for k, v in keys],
        "sessions": len(s.sessions),
        "growing": growing[:TOP],
        "max_ref": s.max_session[1] if s.max_session else None,
        "grown_on": [
            {"route": r, "bytes": n} for r, n in sorted(grown_on.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        ],
    }


_LIBRARY_MARKERS = ("/lib/python3", "site-packages/", "dist-packages/", "<frozen ", "\\lib\\python3")


def is_library_frame(frame: str) -> bool:
    """Whether a ``file:line in func`` frame is in the standard library or an installed package."""
    return any(marker in frame for marker in _LIBRARY_MARKERS)


def dumps_section(c: Collector) -> dict[str, Any]:
    dumps = sorted(c.events.dumps, key=lambda d: (d["time"] or 0, d["ref"]))
    triggers = Counter(str(d["trigger"]) for d in dumps)
    phases = Counter(str(d["phase"]) for d in dumps if d["phase"])
    latest_objects = dumps[-1]["objects"] if dumps else {}
    return {
        "count": len(dumps),
        "dropped": c.events.dropped_dumps,
        "by_trigger": dict(sorted(triggers.items())),
        "routes": dict(_dump_routes(c).most_common(TOP)),
        "phases": dict(phases.most_common(TOP)),
        "frames": [
            {"frame": f, "dumps": n, "library": is_library_frame(f)}
            for f, n in sorted(
                c.events.frames.items(), key=lambda fn: (is_library_frame(fn[0]), -fn[1], fn[0])
            )[:15]
        ],
        "objects_latest": dict(list(latest_objects.items())[:15]),
        "list": [{k: v for k, v in d.items() if k != "objects"} for d in dumps[-50:]],
    }


def sql_outside_section(c: Collector) -> dict[str, Any] | None:
    """SQL run outside profiled requests (start-up, jobs, unsampled requests), from each worker's latest
    state record: totals over workers and the statements by total time. None when no worker reported it."""
    latest = c.events.sql_outside
    if not latest:
        return None
    statements: dict[str, list[float]] = {}
    count, total_ms = 0, 0.0
    for _t, data, _ref in latest.values():
        count += _int(data.get("count"))
        total_ms += _float(data.get("total_ms"))
        for stmt in data.get("statements") or ():
            if isinstance(stmt, dict) and isinstance(stmt.get("sql"), str):
                acc = statements.setdefault(stmt["sql"], [0, 0.0])
                acc[0] += _int(stmt.get("count"))
                acc[1] += _float(stmt.get("total_ms"))
    top = sorted(statements.items(), key=lambda kv: (-kv[1][1], kv[0]))[:10]
    return {
        "workers": len(latest),
        "count": count,
        "total_ms": round(total_ms, 3),
        "statements": [{"sql": sql, "count": int(n), "total_ms": round(ms, 3)} for sql, (n, ms) in top],
        "refs": sorted(ref for _t, _d, ref in latest.values())[:5],
    }


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _float(value: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


def cache_rows(c: Collector) -> list[dict[str, Any]]:
    rows = []
    for agg in c.events.caches.values():
        rows.append(
            {
                "worker": agg["worker"],
                "name": agg["name"],
                "kind": agg["kind"],
                "maxsize": agg["maxsize"],
                "unbounded": agg["unbounded"],
                "first": agg["first"][1],
                "last": agg["last"][1],
                "max": agg["max"],
                "observations": agg["observations"],
                "decreases": agg["decreases"],
                "span_s": round(agg["last"][0] - agg["first"][0], 3),
                "refs": [agg["first"][2], agg["last"][2]],
            }
        )
    rows.sort(key=lambda r: (-(r["last"] - r["first"]), r["worker"], r["name"]))
    return rows

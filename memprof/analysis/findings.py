"""Root-cause findings: each names the cause, the evidence (numbers and the records they come from) and
the fix. Process-level detectors live here; what-requests-load detectors in :mod:`findings_sql`."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from memprof.analysis.collect import Collector
from memprof.analysis.findings_sql import (
    cartesian_join,
    finding,
    large_result_set,
    loader_criteria_explosion,
    n_plus_one,
    session_bloat,
)
from memprof.analysis.stats import (
    describe_merged,
    describe_sorted,
    merged_percentile,
    pearson,
    percentile,
    quarter_medians,
    slope,
)
from memprof.analysis.thresholds import MIB, Thresholds

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
KINDS = ("session_bloat", "n_plus_one", "cartesian_join", "large_result_set", "loader_criteria_explosion",
         "route_family_overhead", "leak", "unbounded_cache", "state_dependent_variance", "worker_killed")  # fmt: skip


def family(route: str) -> str:
    """The route family: the first path segment of a template (``/admin/users/{id}`` -> ``/admin``)."""
    seg = route.strip("/").split("/", 1)[0]
    return "/" + seg if seg and not seg.startswith("{") else route or "/"


def _counted(column: Sequence[int]) -> Sequence[int]:
    """The counted values of an ascending column whose -1 means "not recorded"."""
    return column[bisect_left(column, 0) :]


def _known_pairs(values: Sequence[int], growth: Sequence[int]) -> tuple[list[int], list[int]]:
    """(values, growth) of the samples where the value was recorded (-1: not recorded)."""
    pairs = [(v, g) for v, g in zip(values, growth, strict=False) if v >= 0]
    return [v for v, _ in pairs], [g for _, g in pairs]


def route_family_overhead(c: Collector, t: Thresholds, threshold: int) -> list[dict[str, Any]]:
    fams: dict[str, list[Any]] = {}
    for route, acc in c.routes.items():
        fams.setdefault(family(route), []).append((route, acc))
    if len(fams) < 2:
        return []
    total = sum(len(a.growth) for rs in fams.values() for _r, a in rs)
    highs = {f: sum(len(a.growth) - bisect_left(a.sorted_column("growth"), threshold) for _r, a in rs)
             for f, rs in fams.items()}  # fmt: skip
    all_high = sum(highs.values())
    out = []
    for fam, rs in fams.items():
        n = sum(len(a.growth) for _r, a in rs)
        share, traffic = highs[fam] / max(all_high, 1), n / max(total, 1)
        # most of its requests are high-memory, several times the rate elsewhere (a family smaller than
        # 5% of the traffic cannot hold most of the top 5%: the rates say it instead)
        rate, rest_rate = highs[fam] / max(n, 1), (all_high - highs[fam]) / max(total - n, 1)
        holds_most = share >= 0.5 and share >= 2 * traffic
        mostly_high = rate >= 0.5 and rate >= 2 * rest_rate
        if n < 5 or traffic > 0.5:
            continue
        # RSS growth undercounts a heavy route once the heap has grown: freed memory is reused, so the
        # ORM objects a request loads are the other signal
        objects = merged_percentile([_counted(a.sorted_column("instances")) for _r, a in rs], 50)
        by_memory = highs[fam] >= 5 and (holds_most or mostly_high)
        if not by_memory and objects < t.route_family_min_objects:
            continue  # cheap checks first: the statistics below sort every sample
        others = [a for f, other in fams.items() if f != fam for _r, a in other]
        mine = describe_merged([a.sorted_column("growth") for _r, a in rs])
        rest = describe_merged([a.sorted_column("growth") for a in others])
        rest_objects = merged_percentile([_counted(a.sorted_column("instances")) for a in others], 50)
        by_memory = by_memory and mine["p95"] - rest["p95"] >= t.route_family_min_growth
        by_memory = by_memory and mine["p50"] >= 2 * max(rest["p50"], 1)
        by_objects = objects >= t.route_family_min_objects and objects >= 10 * max(rest_objects, 1)
        if not (by_memory or by_objects):
            continue
        refs = [ref for _g, _s, ref, route, _w, _t in c.high_samples() if family(route) == fam]
        dumps = sum(1 for d in c.events.dumps if d["route"] and family(str(d["route"])) == fam)
        routes = sorted(rs, key=lambda ra: -percentile(ra[1].sorted_column("growth"), 95))[:5]
        out.append(
            finding(
                "route_family_overhead",
                "warning",
                (
                    f"{fam}/*: {rate:.0%} of its requests are high-memory vs {rest_rate:.0%} elsewhere, with "
                    f"{traffic:.0%} of the traffic (p95 growth {mine['p95'] / MIB:.1f} MiB vs "
                    f"{rest['p95'] / MIB:.1f} MiB); it holds {share:.0%} of the high-memory requests"
                    if by_memory
                    else f"{fam}/*: its requests load {objects:,} ORM objects (p50) vs {rest_objects:,} elsewhere, "
                    f"with {traffic:.0%} of the traffic (p95 growth {mine['p95'] / MIB:.1f} MiB vs "
                    f"{rest['p95'] / MIB:.1f} MiB)"
                )
                + (f"; {dumps} of {len(c.events.dumps)} dumps were taken in it" if dumps else ""),
                fam,
                {
                    "family": fam,
                    "high_share": round(share, 4),
                    "traffic_share": round(traffic, 4),
                    "high_requests": highs[fam],
                    "high_rate": round(rate, 4),
                    "objects_p50": objects,
                    "rest_objects_p50": rest_objects,
                    "rest_high_rate": round(rest_rate, 4),
                    "requests": n,
                    "growth_p50": mine["p50"],
                    "growth_p95": mine["p95"],
                    "rest_growth_p50": rest["p50"],
                    "rest_growth_p95": rest["p95"],
                    "dumps": dumps,
                    "routes": [r for r, _a in routes],
                },
                refs,
                f"Give {fam} a memory budget of its own: paginate its list views, load only the columns it "
                "shows (`load_only`, `defer`), stop loading whole related collections (`raiseload('*')` then "
                "explicit `selectinload`), and serve it from a separate worker pool with its own limit so it "
                "cannot take the public API down.",
            )
        )
    return out


def leak(c: Collector, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for name, w in sorted(c.workers.items()):
        if len(w.rss) < t.leak_min_samples:
            continue
        order = w.order()
        ys = w.base if isinstance(order, range) else array("q", [w.base[i] for i in order])
        q = quarter_medians(ys)
        rise = q[3] - q[1]
        if not (q[0] < q[1] < q[2] < q[3]) or rise < max(t.leak_min_growth, 0.05 * q[1]):
            continue
        per_request = slope(ys[len(ys) // 4 :])
        hours = max((w.time[order[-1]] - w.time[order[0]]) / 3600.0, 1e-9)
        grows = _what_grows(c, name)
        near = bool(w.limit and q[3] >= 0.8 * w.limit)
        what = f"; growing: {', '.join(g['name'] for g in grows[:3])}" if grows else ""
        out.append(
            finding(
                "leak",
                "critical" if near else "warning",
                f"Memory of worker {name} grows steadily: {q[0] / MIB:.0f} -> {q[3] / MIB:.0f} MiB (quarter medians) over "
                f"{len(ys)} requests (+{per_request / 1024:.1f} KiB per request){what}",
                name,
                {
                    "worker": name,
                    "samples": len(ys),
                    "rss_first": int(ys[0]),
                    "rss_last": int(ys[-1]),
                    "quarter_medians": [int(v) for v in q],
                    "growth_per_request": round(per_request, 1),
                    "growth_per_hour": round((ys[-1] - ys[0]) / hours, 1),
                    "limit": w.limit,
                    "growing": grows[:5],
                },
                [
                    c.ref(w.first[1], w.first[2]),
                    c.ref(w.last[1], w.last[2]),
                    *[g["ref"] for g in grows[:3]],
                ],
                "Find what keeps references across requests: module-level lists and dicts, caches without a "
                "bound (`lru_cache(maxsize=None)`, dicts used as caches), objects kept on app.state or class "
                "attributes, Sessions never closed (use `with Session(engine) as session:`). Compare the object "
                "counts of two dumps (`memprof analyze --pattern TYPE`); meanwhile recycle workers "
                "(gunicorn `--max-requests`).",
            )
        )
    return out


def _what_grows(c: Collector, worker: str) -> list[dict[str, Any]]:
    grows = []
    for agg in c.events.caches.values():
        if agg["worker"] == worker and agg["last"][1] > agg["first"][1] and not agg["decreases"]:
            grows.append({"name": f"cache {agg['name']}", "first": agg["first"][1], "last": agg["last"][1],
                          "ref": agg["last"][2]})  # fmt: skip
    dumps = sorted((d for d in c.events.dumps if d["worker"] == worker), key=lambda d: d["time"] or 0)
    if len(dumps) >= 2:
        first, last = dumps[0]["objects"], dumps[-1]["objects"]
        for typ, n in last.items():
            if n - first.get(typ, 0) > 0:
                grows.append(
                    {"name": f"{typ} objects", "first": first.get(typ, 0), "last": n, "ref": dumps[-1]["ref"]}
                )
    grows.sort(key=lambda g: -(g["last"] - g["first"]))
    return grows


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def unbounded_cache(c: Collector, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for agg in c.events.caches.values():
        first, last = agg["first"][1], agg["last"][1]
        if (
            not agg["unbounded"]
            or agg["observations"] < 3
            or agg["decreases"]
            or last - first < t.cache_min_growth
        ):
            continue
        span = agg["last"][0] - agg["first"][0]
        out.append(
            finding(
                "unbounded_cache",
                "warning",
                f"Cache {agg['name']} only grows: {first} -> {last} entries in {_duration(span)} on {agg['worker']}",
                agg["name"],
                {
                    "name": agg["name"],
                    "kind": agg["kind"],
                    "worker": agg["worker"],
                    "first": first,
                    "last": last,
                    "observations": agg["observations"],
                    "span_s": round(span, 3),
                    "per_hour": round((last - first) / max(span / 3600.0, 1e-9), 1),
                },
                [agg["first"][2], agg["last"][2]],
                "Bound it: `functools.lru_cache(maxsize=1024)` instead of `maxsize=None`/`functools.cache`, or a "
                "cachetools LRUCache/TTLCache; never key a cache on unbounded values (user ids, raw paths, "
                "query strings). For SQLAlchemy's compiled cache, stop building statements that differ per "
                "call (literal values, growing IN lists: use bound parameters).",
            )
        )
    return out


_VARIABLES = {
    "session_size": "Memory follows the session size: keep the session small (see session_bloat).",
    "instances": "Memory follows the number of ORM objects loaded: bound it (pagination, LIMIT, yield_per) so "
    "one large account or tenant cannot load everything at once.",
    "query_count": "Memory follows the number of queries: lazy loads that grow with the data; eager-load "
    "with selectinload so the cost stops scaling with the rows.",
}


def state_dependent_variance(c: Collector, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for route, acc in sorted(c.routes.items()):
        if len(acc.growth) < t.variance_min_samples:
            continue
        g = describe_sorted(acc.sorted_column("growth"))
        if g["std"] < t.variance_min_std or g["std"] < t.variance_min_cv * g["mean"]:
            continue
        columns = {"session_size": acc.session, "instances": acc.instances, "query_count": acc.queries}
        scores = {
            k: pearson(*_known_pairs(v, acc.growth)) for k, v in columns.items() if max(v, default=-1) > 0
        }
        best = max(scores, key=lambda k: scores[k], default=None)
        r = scores.get(best, 0.0) if best else 0.0
        explained = best is not None and r >= t.variance_min_r
        evidence = {"route": route, "count": g["count"], "growth": {k: g[k] for k in ("p50", "p95", "max", "std")},
                    "variable": best if explained else None, "r": round(r, 3), "correlations":
                    {k: round(v, 3) for k, v in sorted(scores.items())}}  # fmt: skip
        title = f"{route}: memory varies widely (p50 {g['p50'] / MIB:.1f} MiB, max {g['max'] / MIB:.1f} MiB)"
        out.append(
            finding(
                "state_dependent_variance",
                "warning" if explained else "info",
                title
                + (
                    f", explained by {best} (r={r:.2f})"
                    if explained
                    else ", no recorded variable explains it"
                ),
                route,
                evidence,
                [acc.max_ref[1] if acc.max_ref else ""],
                _VARIABLES[best]
                if explained and best
                else "Add checkpoints around the suspect steps of this "
                "route (`with checkpoint(...)`) and profile it in aggressive mode to see which phase varies.",
            )
        )
    return out


def worker_killed(c: Collector) -> list[dict[str, Any]]:
    out = []
    for crash in c.events.crashes:
        rss, limit = crash["last_rss"], crash["limit"]
        pct = f" at {rss / limit:.0%} of its limit" if rss and limit else ""
        routes = [str(r["route"]) for r in crash["inflight"] if r.get("route")]
        inflight = f" with {len(routes)} request(s) in flight: {', '.join(routes[:3])}" if routes else ""
        out.append(
            finding(
                "worker_killed",
                "critical",
                f"Worker {crash['worker']} was killed{pct}{inflight}",
                crash["worker"],
                {
                    "worker": crash["worker"],
                    "last_rss": rss,
                    "limit": limit,
                    "uptime_s": crash["uptime_s"],
                    "last_seen": crash["last_seen"],
                    "inflight": crash["inflight"],
                },
                [crash["ref"]],
                "The kernel's OOM killer or the supervisor killed it; the requests in flight are the suspects: "
                + (f"run `memprof analyze --route '{routes[0]}'` and " if routes else "")
                + "reproduce with `memprof reproduce`; give the container headroom and recycle workers "
                "(gunicorn `--max-requests`) while the cause is fixed.",
            )
        )
    return out


def detect(
    c: Collector, threshold: int, sessions: dict[str, Any] | None, t: Thresholds | None = None
) -> list[dict[str, Any]]:
    """Every finding, most severe first."""
    t = t or Thresholds()
    found = [
        *worker_killed(c),
        *leak(c, t),
        *route_family_overhead(c, t, threshold),
        *session_bloat(c, t, sessions),
        *n_plus_one(c, t),
        *cartesian_join(c, t),
        *large_result_set(c, t),
        *loader_criteria_explosion(c, t),
        *unbounded_cache(c, t),
        *state_dependent_variance(c, t),
    ]
    found.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], KINDS.index(f["kind"]), f["subject"]))
    return found

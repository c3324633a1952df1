"""Root-cause findings: each names the cause, the evidence (numbers and the records they come from) and
the fix. Every detector is a pure function of aggregates (:class:`~memprof.analysis.summary.Facts`) with
its thresholds as named parameters; :func:`detect` runs them all with a :class:`Thresholds`.
Process-level detectors live here; what-requests-load detectors in :mod:`findings_sql`."""

from __future__ import annotations

from typing import Any

from memprof.analysis.findings_sql import (
    cartesian_join,
    finding,
    large_result_set,
    loader_criteria_explosion,
    n_plus_one,
    session_bloat,
)
from memprof.analysis.summary import Facts
from memprof.analysis.thresholds import MIB, Thresholds

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
KINDS = ("session_bloat", "n_plus_one", "cartesian_join", "large_result_set", "loader_criteria_explosion",
         "route_family_overhead", "leak", "unbounded_cache", "state_dependent_variance", "worker_killed")  # fmt: skip


def family(route: str) -> str:
    """The route family: the first path segment of a template (``/admin/users/{id}`` -> ``/admin``)."""
    seg = route.strip("/").split("/", 1)[0]
    return "/" + seg if seg and not seg.startswith("{") else route or "/"


def route_family_overhead(
    facts: Facts, *, min_growth: int = 4 * MIB, min_objects: int = 1000
) -> list[dict[str, Any]]:
    """A route family (first path segment) with at most half the traffic that holds most high-memory
    requests (twice its traffic share), or whose own requests are mostly high-memory (twice the rate
    elsewhere), with a p95 growth ``min_growth`` above the rest's and a p50 at least twice; or whose
    requests load ``min_objects`` ORM objects or more (p50), ten times the rest."""
    fams = {f["family"]: f for f in facts.families}
    if len(fams) < 2:
        return []
    total = facts.samples
    all_high = sum(f["high"] for f in fams.values())
    out = []
    for fam, f in fams.items():
        n, high = f["requests"], f["high"]
        share, traffic = high / max(all_high, 1), n / max(total, 1)
        # most of its requests are high-memory, several times the rate elsewhere (a family smaller than
        # 5% of the traffic cannot hold most of the top 5%: the rates say it instead)
        rate, rest_rate = high / max(n, 1), (all_high - high) / max(total - n, 1)
        holds_most = share >= 0.5 and share >= 2 * traffic
        mostly_high = rate >= 0.5 and rate >= 2 * rest_rate
        if n < 5 or traffic > 0.5 or "rest" not in f:
            continue
        # RSS growth undercounts a heavy route once the heap has grown: freed memory is reused, so the
        # ORM objects a request loads are the other signal
        objects = int(f["objects_p50"] or 0)
        rest = f["rest"]
        rest_objects = int(rest["objects_p50"] or 0)
        mine = {"p50": f["growth_p50"], "p95": f["growth_p95"]}
        by_memory = high >= 5 and (holds_most or mostly_high)
        by_memory = by_memory and mine["p95"] - rest["growth_p95"] >= min_growth
        by_memory = by_memory and mine["p50"] >= 2 * max(rest["growth_p50"], 1)
        by_objects = objects >= min_objects and objects >= 10 * max(rest_objects, 1)
        if not (by_memory or by_objects):
            continue
        rest = {**rest, "p50": rest["growth_p50"], "p95": rest["growth_p95"]}
        refs = [h["ref"] for h in facts.high if family(h["route"]) == fam]
        dumps = sum(1 for d in facts.dumps if d["route"] and family(str(d["route"])) == fam)
        routes = rest["routes"]
        dumps_total = len(facts.dumps)
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
                + (f"; {dumps} of {dumps_total} dumps were taken in it" if dumps else ""),
                fam,
                {
                    "family": fam,
                    "high_share": round(share, 4),
                    "traffic_share": round(traffic, 4),
                    "high_requests": high,
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
                    "routes": routes,
                },
                refs,
                f"Give {fam} a memory budget of its own: paginate its list views, load only the columns it "
                "shows (`load_only`, `defer`), stop loading whole related collections (`raiseload('*')` then "
                "explicit `selectinload`), and serve it from a separate worker pool with its own limit so it "
                "cannot take the public API down.",
            )
        )
    return out


def leak(facts: Facts, *, min_growth: int = 8 * MIB, min_samples: int = 40) -> list[dict[str, Any]]:
    """A worker (with ``min_samples`` samples or more) whose resting RSS (at request start) rises through
    all four quarters of its requests, by ``min_growth`` bytes and 5% or more; critical past 80% of its limit.
    Names what grows: caches that only grew, object types that grew between its first and last dump."""
    out = []
    for w in facts.leak:
        q = w["quarters"]
        if w["samples"] < min_samples or len(q) != 4:
            continue
        rise = q[3] - q[1]
        if not (q[0] < q[1] < q[2] < q[3]) or rise < max(min_growth, 0.05 * q[1]):
            continue
        name = w["worker"]
        per_request = float(w["per_request"] or 0.0)
        hours = max((w["t1"] - w["t0"]) / 3600.0, 1e-9)
        grows = _what_grows(facts, name)
        near = bool(w["limit"] and q[3] >= 0.8 * w["limit"])
        what = f"; growing: {', '.join(g['name'] for g in grows[:3])}" if grows else ""
        out.append(
            finding(
                "leak",
                "critical" if near else "warning",
                f"Memory of worker {name} grows steadily: {q[0] / MIB:.0f} -> {q[3] / MIB:.0f} MiB (quarter medians) over "
                f"{w['samples']} requests (+{per_request / 1024:.1f} KiB per request){what}",
                name,
                {
                    "worker": name,
                    "samples": w["samples"],
                    "rss_first": int(w["first"]),
                    "rss_last": int(w["last"]),
                    "quarter_medians": [int(v) for v in q],
                    "growth_per_request": round(per_request, 1),
                    "growth_per_hour": round((w["last"] - w["first"]) / hours, 1),
                    "limit": w["limit"],
                    "growing": grows[:5],
                },
                [w["first_ref"], w["last_ref"], *[g["ref"] for g in grows[:3]]],
                "Find what keeps references across requests: module-level lists and dicts, caches without a "
                "bound (`lru_cache(maxsize=None)`, dicts used as caches), objects kept on app.state or class "
                "attributes, Sessions never closed (use `with Session(engine) as session:`). Compare the object "
                "counts of two dumps (`memprof analyze --pattern TYPE`); meanwhile recycle workers "
                "(gunicorn `--max-requests`).",
            )
        )
    return out


def _what_grows(facts: Facts, worker: str) -> list[dict[str, Any]]:
    grows = []
    for agg in facts.caches:
        if agg["worker"] == worker and agg["last"] > agg["first"] and not agg["decreases"]:
            grows.append({"name": f"cache {agg['name']}", "first": agg["first"], "last": agg["last"],
                          "ref": agg["refs"][1]})  # fmt: skip
    dumps = sorted((d for d in facts.dumps if d["worker"] == worker), key=lambda d: d["time"] or 0)
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


def unbounded_cache(caches: list[dict[str, Any]], *, min_growth: int = 100) -> list[dict[str, Any]]:
    """A cache without a maxsize, seen three times or more, never shrinking, grown by ``min_growth``
    entries or more."""
    out = []
    for agg in caches:
        first, last = agg["first"], agg["last"]
        if not agg["unbounded"] or agg["observations"] < 3 or agg["decreases"] or last - first < min_growth:
            continue
        span = agg["span_s"]
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
                agg["refs"],
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


def state_dependent_variance(
    facts: Facts, *, min_std: int = 2 * MIB, min_cv: float = 0.3, min_r: float = 0.6
) -> list[dict[str, Any]]:
    """A route whose growth varies widely (std ``min_std`` bytes or more, and ``min_cv`` times the mean or
    more), explained (warning) by the recorded variable that correlates with it at ``min_r`` or more
    (session size, ORM instances, query count), or not (info)."""
    out = []
    for v in facts.variance:
        route, g, scores = v["route"], v["growth"], v["scores"]
        if g["std"] < min_std or g["std"] < min_cv * g["mean"]:
            continue
        best = max(scores, key=lambda k: scores[k], default=None)
        r = scores.get(best, 0.0) if best else 0.0
        explained = best is not None and r >= min_r
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
                [v["max_ref"] or ""],
                _VARIABLES[best]
                if explained and best
                else "Add checkpoints around the suspect steps of this "
                "route (`with checkpoint(...)`) and profile it in aggressive mode to see which phase varies.",
            )
        )
    return out


def worker_killed(crashes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every crash record of the flight recorder: a worker killed, with the requests in flight."""
    out = []
    for crash in crashes:
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


def detect(facts: Facts, t: Thresholds | None = None) -> list[dict[str, Any]]:
    """Every finding, most severe first."""
    t = t or Thresholds()
    found = [
        *worker_killed(facts.crashes),
        *leak(facts, min_growth=t.leak_min_growth, min_samples=t.leak_min_samples),
        *route_family_overhead(
            facts, min_growth=t.route_family_min_growth, min_objects=t.route_family_min_objects
        ),
        *session_bloat(facts.sessions, p95=t.session_p95, largest=t.session_max, growth=t.session_growth),
        *n_plus_one(facts.statements, min_executions=t.n_plus_one),
        *cartesian_join(facts.statements, min_rows=t.cartesian_rows, min_ratio=t.cartesian_ratio),
        *large_result_set(facts.statements, min_instances=t.large_instances, min_rss=t.large_rss),
        *loader_criteria_explosion(facts.scopes, per_request=t.criteria_per_request),
        *unbounded_cache(facts.caches, min_growth=t.cache_min_growth),
        *state_dependent_variance(
            facts, min_std=t.variance_min_std, min_cv=t.variance_min_cv, min_r=t.variance_min_r
        ),
    ]
    found.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], KINDS.index(f["kind"]), f["subject"]))
    return found

"""Root-cause findings: each names the cause, the evidence (numbers and the records they come from) and
the fix. Every detector is a pure function of aggregates (:class:`~memprof.analysis.summary.Facts`) with
its thresholds as named parameters; :func:`detect` runs them all with a :class:`Thresholds`.
Process-level detectors live here; what-requests-load detectors in :mod:`findings_sql`."""

from __future__ import annotations

from typing import Any

from memprof.analysis.findings_memory import leak, unbounded_cache
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
CRITICAL_SHARE = 0.5
"""A warning becomes critical when what it holds at once reaches this share of the memory limit."""
HELD = ("leak", "unbounded_cache")
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
                    "basis": "memory" if by_memory else "objects",
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
                    "peak_bytes": int(mine["p95"]),
                    "impact_bytes": int(mine["p50"]) * int(n),
                },
                refs,
                f"Give {fam} a memory budget of its own: paginate its list views, load only the columns it "
                "shows (`load_only`, `defer`), stop loading whole related collections (`raiseload('*')` then "
                "explicit `selectinload`), and serve it from a separate worker pool with its own limit so it "
                "cannot take the public API down.",
            )
        )
    return out


MIN_OBJECTS = 1000
"""ORM instances one request of a route must reach before their spread is worth a finding (RSS-only)."""
_VARIABLES = {
    "rows": "Memory follows the rows fetched: bound them (LIMIT, pagination, yield_per) so one large account "
    "or tenant cannot fetch everything at once.",
    "path": "Memory follows the path parameter (the account, tenant or object requested): some of them hold far "
    "more data; paginate or stream what this route loads for them.",
    "session_size": "Memory follows the session size: keep the session small (see session_bloat).",
    "instances": "Memory follows the number of ORM objects loaded: bound it (pagination, LIMIT, yield_per) so "
    "one large account or tenant cannot load everything at once.",
    "query_count": "Memory follows the number of queries: lazy loads that grow with the data; eager-load "
    "with selectinload so the cost stops scaling with the rows.",
}


def state_dependent_variance(
    facts: Facts, *, min_std: int = 2 * MIB, min_cv: float = 0.3, min_r: float = 0.6
) -> list[dict[str, Any]]:
    """A route whose per-request memory varies widely (std ``min_std`` bytes or more, and ``min_cv`` times
    the mean or more), explained by the recorded variable that correlates with it at ``min_r`` or more
    (session size, ORM instances, rows, query count). Without an explaining variable nothing is listed: the
    variance is in the route's statistics."""
    out: list[dict[str, Any]] = []
    for v in facts.variance:
        route, g, scores = v["route"], v["growth"], v["scores"]
        objects = v.get("measure") == "instances"
        if objects:  # RSS-only records: the objects loaded, which a warm heap does not hide
            if g["max"] < MIN_OBJECTS or g["std"] < min_cv * g["mean"]:
                continue
        elif g["std"] < min_std or g["std"] < min_cv * g["mean"]:
            continue
        if any(o["subject"] == route for o in out):
            continue
        best = max(scores, key=lambda k: scores[k], default=None)
        r = scores.get(best, 0.0) if best else 0.0
        explained = best is not None and r >= min_r
        if not explained:
            continue
        evidence = {"route": route, "count": g["count"], "measure": "instances" if objects else "memory",
                    "growth": {k: g[k] for k in ("p50", "p95", "max", "std")},
                    "variable": best if explained else None, "r": round(r, 3), "correlations":
                    {k: round(v, 3) for k, v in sorted(scores.items())},
                    "peak_bytes": 0 if objects else int(g["max"]),
                    "impact_bytes": 0 if objects else int(max(g["p95"] - g["p50"], 0)) * int(g["count"])}  # fmt: skip
        title = (f"{route}: ORM objects per request vary widely with the data (p50 {g['p50']:,}, max {g['max']:,}, "
                 f"{g['count']} requests)" if objects else
                 f"{route}: memory per request varies widely with the data (p50 {g['p50'] / MIB:.1f} MiB, max "
                 f"{g['max'] / MIB:.1f} MiB, {g['count']} requests)")  # fmt: skip
        out.append(
            finding(
                "state_dependent_variance",
                "warning",
                title + f", explained by {best} (r={r:.2f})",
                route,
                evidence,
                [v["max_ref"] or ""],
                _VARIABLES.get(str(best), "Memory follows this variable: bound what it measures."),
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
                    "impact_bytes": int(rss or 0),
                },
                [crash["ref"]],
                "The kernel's OOM killer or the supervisor killed it; the requests in flight are the suspects: "
                + (f"run `memprof analyze --route '{routes[0]}'` and " if routes else "")
                + "reproduce with `memprof reproduce`; give the container headroom and recycle workers "
                "(gunicorn `--max-requests`) while the cause is fixed.",
            )
        )
    return out


def detect(facts: Facts, t: Thresholds | None = None, *, show_all: bool = False) -> list[dict[str, Any]]:
    """Every finding, most severe first, then by ``impact_bytes`` (critical when a finding's bytes reach
    half the memory limit); library caches only with ``show_all``."""
    t = t or Thresholds()
    cartesian = cartesian_join(facts.statements, min_rows=t.cartesian_rows, min_ratio=t.cartesian_ratio)
    found = [
        *worker_killed(facts.crashes),
        *leak(facts.leak, facts.retained, facts.caches, facts.dumps, min_growth=t.leak_min_growth,
              min_samples=t.leak_min_samples, show_all=show_all),
        *route_family_overhead(
            facts, min_growth=t.route_family_min_growth, min_objects=t.route_family_min_objects
        ),
        *session_bloat(facts.sessions, p95=t.session_p95, largest=t.session_max, growth=t.session_growth),
        *n_plus_one(facts.sites),
        *cartesian,
        *large_result_set(facts.statements, min_instances=t.large_instances, min_rss=t.large_rss,
                          cartesian=frozenset(f["subject"] for f in cartesian)),
        *loader_criteria_explosion(facts.scopes, per_request=t.criteria_per_request),
        *unbounded_cache(facts.caches, min_growth=t.cache_min_growth, show_all=show_all),
        *state_dependent_variance(
            facts, min_std=t.variance_min_std, min_cv=t.variance_min_cv, min_r=t.variance_min_r
        ),
    ]  # fmt: skip
    _point_to_causes(found, facts.routes)
    for f in found:
        f["impact_bytes"] = int(f["evidence"].get("impact_bytes") or 0)
        # severity by what one request (or the process) holds at once, against the limit; a sum over
        # requests that did not overlap never held that much
        held = f["evidence"].get("peak_bytes") or (f["impact_bytes"] if f["kind"] in HELD else 0)
        if facts.limit and f["severity"] == "warning" and held >= CRITICAL_SHARE * facts.limit:
            f["severity"] = "critical"
    found.sort(
        key=lambda f: (
            SEVERITY_ORDER[f["severity"]],
            -f["impact_bytes"],
            KINDS.index(f["kind"]),
            f["subject"],
        )
    )
    return found


# The variables a statement's cost grows with: a route whose memory follows one of them, and that has a
# cartesian join or an N+1, has one cause (the statement), not two.
_DATA_VARIABLES = ("rows", "path", "instances", "query_count")
# The statement findings a route's data-dependent spread folds into, most specific first.
_SPREAD_CAUSES = ("cartesian_join", "n_plus_one")
# What explains a route's memory (an N+1 costs queries: it may run on light routes too).
_EXPLAINS_MEMORY = ("cartesian_join", "large_result_set", "state_dependent_variance")


def _point_to_causes(found: list[dict[str, Any]], routes: list[dict[str, Any]]) -> None:
    """One finding per cause.

    - A route whose memory follows the data, and a large result set on that route only, are one cause:
      the variance finding names the statement (the large result set is dropped).
    - A route whose memory follows the data it loads (rows, path, objects, queries) and that has a
      cartesian join or an N+1: the statement is the cause, its rows grow with the data; the variance
      becomes evidence of the statement's finding.
    - A route family that holds most high-memory requests, when findings on its routes explain 80% or
      more of them, restates those findings: it points to them (info). A family whose routes all load many
      objects is the cause of a large result set on one of its routes: the statement becomes its evidence.
    """
    for v in [f for f in found if f["kind"] == "state_dependent_variance"]:
        route = v["subject"]
        for big in [
            f for f in found if f["kind"] == "large_result_set" and f["evidence"].get("routes") == [route]
        ]:
            found.remove(big)
            ev = big["evidence"]
            v["evidence"].update(statement=ev["statement"], id=ev["id"], instances=ev["instances"])
            v["evidence"]["impact_bytes"] = max(v["evidence"]["impact_bytes"], ev["impact_bytes"])
            v["title"] += f"; up to {ev['instances']:,} objects from one statement"
            v["fix"] += " " + big["fix"]
    _fold_spread_into_statements(found)
    _families_point_to_causes(found, {str(r["route"]): int(r.get("high") or 0) for r in routes})


def _absorb(into: dict[str, Any], other: dict[str, Any]) -> None:
    """``other``'s records and bytes at stake become ``into``'s evidence too (``other`` is dropped)."""
    into["records"] = list(dict.fromkeys([*into["records"], *other["records"]]))[:5]
    into["impact_bytes"] = max(int(into.get("impact_bytes") or 0), int(other.get("impact_bytes") or 0))


def _fold_spread_into_statements(found: list[dict[str, Any]]) -> None:
    """A data-dependent spread on a route with a cartesian join or an N+1 becomes that finding's evidence."""
    for v in [f for f in found if f["kind"] == "state_dependent_variance"]:
        ev = v["evidence"]
        if ev.get("variable") not in _DATA_VARIABLES:
            continue
        causes = [f for kind in _SPREAD_CAUSES for f in found
                  if f["kind"] == kind and v["subject"] in (f["evidence"].get("routes") or ())]  # fmt: skip
        if not causes:
            continue
        found.remove(v)
        cause, g = causes[0], ev["growth"]
        spread = (f"{g['p50']:,} -> {g['max']:,} ORM objects" if ev["measure"] == "instances"
                  else f"p50 {g['p50'] / MIB:.1f} MiB, max {g['max'] / MIB:.1f} MiB")  # fmt: skip
        cause["title"] += f"; on {v['subject']} memory per request follows the {ev['variable']} (r={ev['r']:.2f}, {spread})"  # fmt: skip
        cause["evidence"]["varies_with"] = {k: ev[k] for k in ("route", "variable", "r", "measure", "growth")}
        _absorb(cause["evidence"], ev)


def _families_point_to_causes(found: list[dict[str, Any]], high: dict[str, int]) -> None:
    """Route families restating their routes' findings point to them; a family that loads whole tables takes
    in a large result set of its routes. ``high``: high-memory requests per route."""
    per_route: dict[str, list[str]] = {}
    for f in [f for f in found if f["kind"] in _EXPLAINS_MEMORY]:
        own = [f["subject"]] if f["kind"] == "state_dependent_variance" else []
        for r in f["evidence"].get("routes") or own:
            per_route.setdefault(r, []).append(f"{f['kind']}:{f['subject'][:80]}")
    for f in [f for f in found if f["kind"] == "route_family_overhead"]:
        ev, fam = f["evidence"], f["subject"]
        members = {r for r in high if family(r) == fam}
        listed = ev.get("routes") or []
        if ev.get("basis") == "objects":
            # the family's routes load whole tables: a large result set on one of them is that cause
            for big in [g for g in found if g["kind"] == "large_result_set"
                        and set(g["evidence"].get("routes") or ()) <= members and g["evidence"].get("routes")]:  # fmt: skip
                found.remove(big)
                b = big["evidence"]
                ev.setdefault("statements", []).append(
                    {"id": b["id"], "sql": b["statement"], "instances": b["instances"], "routes": b["routes"]}
                )
                f["title"] += (
                    f"; {', '.join(b['routes'])} loads up to {b['instances']:,} objects from one statement"
                )
                _absorb(ev, b)
            continue
        explained = [r for r in high if r in members and r in per_route]
        covered = sum(high[r] for r in explained)
        if (listed and all(r in per_route for r in listed)) or (
            ev.get("high_requests") and covered >= 0.8 * ev["high_requests"]
        ):
            see = sorted({x for r in explained for x in per_route[r]})
            f["title"] = f"{fam}/*: its high-memory requests are explained by {len(see)} finding(s) above"
            f["evidence"] = {"family": fam, "see": see, "routes": listed, "records": ev["records"],
                             "impact_bytes": 0}  # fmt: skip
            f["severity"] = "info"

"""Findings about what requests load: N+1 queries, cartesian joins, large result sets, loader criteria,
session bloat. Each detector is a pure function of aggregates (:mod:`memprof.analysis.details`) and
named thresholds (the defaults of :class:`~memprof.analysis.thresholds.Thresholds`), returning findings."""

from __future__ import annotations

from typing import Any

from memprof.analysis.thresholds import KIB, MIB

GROWN_ON_SHARE = 0.1  # a route is named as growing sessions with at least this share of the top one's growth


def finding(
    kind: str, severity: str, title: str, subject: str, evidence: dict[str, Any], records: list[str], fix: str
) -> dict[str, Any]:
    """One finding in the documented shape (see docs/analyzer.md)."""
    return {
        "kind": kind,
        "severity": severity,
        "title": title,
        "subject": subject,
        "evidence": {**evidence, "records": list(dict.fromkeys(r for r in records if r))[:5]},
        "fix": fix,
    }


def _short(sql: str, n: int = 80) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def n_plus_one(statements: list[dict[str, Any]], *, min_executions: int = 10) -> list[dict[str, Any]]:
    """A SELECT the SQLAlchemy integration flagged as an N+1, or one run ``min_executions`` times or more in
    one request: named with the frame and routes where it repeats."""
    out = []
    for a in statements:
        sql = a["sql"]
        # a SELECT repeated per row; an INSERT/UPDATE repeated in a loop is another pattern (executemany)
        is_select = sql.lstrip()[:6].upper().startswith(("SELECT", "WITH"))
        if not is_select or not (a["n_plus_one"] > 0 or a["max_count"] >= min_executions):
            continue
        # the frame and routes where it ran as an N+1, not where it also ran once
        frames = a["n1_frames"] or a["frames"]
        frame = frames[0] if frames else None
        routes = a["n1_routes"] or a["routes"]
        at = f" at {frame}" if frame else ""
        out.append(
            finding(
                "n_plus_one",
                "warning",
                f"N+1 query: one statement ran up to {a['max_count']} times in one request{at}",
                sql,
                {
                    "statement": sql,
                    "max_per_request": a["max_count"],
                    "requests": a["n_plus_one"] or a["requests"],
                    "executions": a["executions"],
                    "lazy": a["lazy"],
                    "frame": frame,
                    "routes": routes[:3],
                },
                [*a["n_plus_one_refs"], a["worst_ref"] or ""],
                f"Load the relationship with the parent query instead of once per row{at}: "
                "`select(Parent).options(selectinload(Parent.children))` for collections, `joinedload` for "
                'many-to-one; set `lazy="raise"` on the relationship to catch every lazy load in tests.',
            )
        )
    return out


def cartesian_join(
    statements: list[dict[str, Any]], *, min_rows: int = 1000, min_ratio: float = 10.0
) -> list[dict[str, Any]]:
    """A statement that fetched ``min_rows`` rows or more in one request, ``min_ratio`` times the objects it
    built or more: several joined collections multiplying their rows."""
    out = []
    for a in statements:
        sql = a["sql"]
        if a["cartesian"] is None:
            continue
        rows, instances, ref = a["cartesian"]
        if rows < min_rows or rows < min_ratio * max(instances, 1):
            continue
        out.append(
            finding(
                "cartesian_join",
                "warning",
                f"Cartesian join: {rows} rows fetched for {instances} objects ({rows // max(instances, 1)}x)",
                sql,
                {
                    "statement": _short(sql, 400),
                    "rows": rows,
                    "instances": instances,
                    "ratio": round(rows / max(instances, 1), 1),
                    "routes": a["routes"][:3],
                },
                [ref],
                "Several joinedload() collections on one query multiply their rows: load collections with "
                "selectinload() (one extra SELECT ... IN per collection) and keep joinedload() for many-to-one.",
            )
        )
    return out


def large_result_set(
    statements: list[dict[str, Any]], *, min_instances: int = 5000, min_rss: int = 64 * MIB
) -> list[dict[str, Any]]:
    """A statement that built ``min_instances`` ORM objects or more, or grew RSS by ``min_rss`` bytes or
    more, in one request."""
    out = []
    for a in statements:
        sql = a["sql"]
        if a["large"] is None:
            continue
        instances, delta, ref = a["large"]
        if instances < min_instances and delta < min_rss:
            continue
        out.append(
            finding(
                "large_result_set",
                "warning",
                f"Large result set: {instances} objects and +{delta / MIB:.1f} MiB on one statement",
                sql,
                {
                    "statement": _short(sql, 400),
                    "instances": instances,
                    "rss_delta": delta,
                    "rows": a["rows"],
                    "requests": a["requests"],
                    "routes": a["routes"][:3],
                },
                [ref],
                "Do not materialise the whole result: stream with `stmt.execution_options(yield_per=1000)` "
                "(or `session.stream_scalars` on AsyncSession), paginate (LIMIT with keyset pagination), or "
                "select only the needed columns (`select(Model.id, Model.name)`, `load_only`).",
            )
        )
    return out


def loader_criteria_explosion(scopes: list[dict[str, Any]], *, per_request: int = 50) -> list[dict[str, Any]]:
    """A loader criteria applied ``per_request`` times or more in one request, or twice to one statement."""
    out = []
    for a in scopes:
        cls, crit = a["model"], a["criteria"]
        mean = a["applied"] / max(a["requests"], 1)
        if a["max_applied"] < per_request and not a["duplicates"]:
            continue
        out.append(
            finding(
                "loader_criteria_explosion",
                "warning",
                f"Loader criteria on {cls} applied up to {a['max_applied']} times in one request"
                + (f", {a['duplicates']} duplicates" if a["duplicates"] else ""),
                f"{cls} {crit}",
                {
                    "model": cls,
                    "criteria": crit,
                    "kind": a["kind"],
                    "where": a["where"],
                    "max_per_request": a["max_applied"],
                    "mean_per_request": round(mean, 1),
                    "duplicates": a["duplicates"],
                    "requests": a["requests"],
                    "routes": a["routes"][:3],
                },
                [a["ref"]],
                "Add the criteria once per top-level SELECT in a `do_orm_execute` hook (skip "
                "`is_column_load` and `is_relationship_load`: criteria propagate to lazy and eager loads "
                "themselves), with `include_aliases=True`, and never add it again inside loops or per relationship.",
            )
        )
    return out


def session_bloat(
    sessions: dict[str, Any] | None, *, p95: int = 64 * KIB, largest: int = 256 * KIB, growth: int = 32 * KIB
) -> list[dict[str, Any]]:
    """Sessions whose p95 size is ``p95`` bytes or more, or largest ``largest`` or more, or one session that
    grew by ``growth`` bytes or more over three requests or more (critical from 4 MiB)."""
    if not sessions:
        return []
    size = sessions["size"]
    growing = [g for g in sessions["growing"] if g["growth"] >= growth and g["requests"] >= 3]
    if size["p95"] < p95 and size["max"] < largest and not growing:
        return []
    severity = "critical" if size["max"] >= 4 * MIB else "warning"
    keys = sessions["largest_keys"][:5]
    big = [k for k in keys if k["max_size"] >= 1024] or keys[:1]
    what = ", ".join(f"{k['key']} ({k['max_size'] / KIB:.0f} KiB)" for k in big[:3])
    grew = (
        f"; one session grew by {growing[0]['growth'] / KIB:.0f} KiB over {growing[0]['requests']} requests"
        if growing
        else ""
    )
    # The routes that grow sessions; one where a small session grew by a few bytes (a counter gaining a
    # digit) is not worth naming beside one that adds hundreds of KiB.
    routes = sessions.get("grown_on") or []
    top = routes[0]["bytes"] if routes else 0
    grown_on = [g["route"] for g in routes if g["bytes"] >= GROWN_ON_SHARE * top]
    where = f", on {', '.join(grown_on[:2])}" if grown_on and growing else ""
    return [
        finding(
            "session_bloat",
            severity,
            f"Session bloat: sessions up to {size['max'] / KIB:.0f} KiB (p95 {size['p95'] / KIB:.0f} KiB); "
            f"largest: {what}{grew}{where}",
            "session",
            {
                "size_p50": size["p50"],
                "size_p95": size["p95"],
                "size_max": size["max"],
                "largest_key": keys[0]["key"] if keys else None,
                "largest_key_size": keys[0]["max_size"] if keys else None,
                "size": {k: size[k] for k in ("count", "p50", "p95", "max")},
                "largest_keys": keys,
                "growing_sessions": growing[:3],
                "grown_on": sessions.get("grown_on") or [],
            },
            [sessions["max_ref"], *[g["ref"] for g in growing[:2]], *[k["ref"] for k in keys[:2]]],
            "Keep identifiers in the session, not objects or growing lists: store the id and reload it per "
            "request, or keep the data server-side (database, Redis with a TTL); trim lists that are appended "
            "to on every request. A cookie session (Starlette SessionMiddleware) also travels with every request.",
        )
    ]

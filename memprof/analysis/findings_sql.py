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


def short_id(text: str) -> str:
    """A short stable id of a statement or code site, shared by the text output and JSON."""
    import hashlib

    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:8]


def n_plus_one(sites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finding per code site (the loop, else the frame) that repeats SELECTs in one request, listing
    every statement it repeats, with the fix that fits: eager loading when every repeat is a lazy
    relationship load, batching (one IN query, bulk insert/update) for explicit per-item calls."""
    out = []
    for x in sites:
        site, stmts = x["site"], x["statements"]
        if not stmts:
            continue
        lazy = all(st["lazy"] for st in stmts)
        where = "loop at" if x["is_loop"] else "calls at"
        lib = f" (through {x['library']})" if x.get("library") else ""
        shared = x["shared_requests"]
        title = (
            f"N+1 at {site}: {len(stmts)} statement{'s' if len(stmts) > 1 else ''} repeated up to "
            f"{x['max_per_request']} times per request (median {x['median_per_request']}) in {x['requests']} "
            f"request{'s' if x['requests'] > 1 else ''} on {len(x['routes'])} route{'s' if len(x['routes']) > 1 else ''}"
            + (f"; the query is built by {x['library']}" if x.get("library") and x["library"] != site else "")
        )
        fix = (
            f"Load the relationship with the parent query instead of once per row in the {where} {site}: "
            "`select(Parent).options(selectinload(Parent.children))` for collections, `joinedload` for "
            'many-to-one; set `lazy="raise"` on the relationship to catch every lazy load in tests.'
            if lazy
            else f"Batch the {where} {site}{lib}: fetch every item with one query (`WHERE id IN (...)`, "
            "`select(Model).where(Model.id.in_(ids))`) and write with one bulk statement "
            "(`session.execute(update(Model), [...])`, `insert(Model).values([...])`) instead of one call per item."
        )
        out.append(
            finding(
                "n_plus_one",
                "warning",
                title,
                site,
                {
                    "site": site,
                    "is_loop": x["is_loop"],
                    "library": x.get("library"),
                    "lazy": lazy,
                    "statements": [{**st, "id": short_id(st["sql"])} for st in stmts],
                    "max_per_request": x["max_per_request"],
                    "median_per_request": x["median_per_request"],
                    "requests": x["requests"],
                    "overlapping_requests": shared,
                    "routes": x["routes"],
                    "impact_bytes": int(x["delta"]),
                },
                x["refs"],
                fix,
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
                f"Cartesian join: {rows} rows fetched for {instances} objects ({rows / max(instances, 1):.1f}x) in one "
                f"request of {a['routes'][0] if a['routes'] else '?'} ({a['requests']} requests ran it)",
                sql,
                {
                    "statement": sql,
                    "id": short_id(sql),
                    "rows": rows,
                    "instances": instances,
                    "ratio": round(rows / max(instances, 1), 1),
                    "requests": a["requests"],
                    "peak_bytes": a["peak"],
                    "routes": a["routes"],
                    "impact_bytes": int(a["peak"]) * max(a["heavy_requests"], 1),
                },
                [ref],
                "Several joinedload() collections on one query multiply their rows: load collections with "
                "selectinload() (one extra SELECT ... IN per collection) and keep joinedload() for many-to-one.",
            )
        )
    return out


def large_result_set(
    statements: list[dict[str, Any]],
    *,
    min_instances: int = 5000,
    min_rss: int = 64 * MIB,
    cartesian: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """A statement that built ``min_instances`` ORM objects or more, or grew memory (heap where recorded,
    else RSS) by ``min_rss`` bytes or more, in one request; not one that is a cartesian join (``cartesian``:
    the statements with that finding, the cause)."""
    out = []
    for a in statements:
        sql = a["sql"]
        if a["large"] is None or sql in cartesian:
            continue
        instances, delta, ref = a["large"]
        if instances < min_instances and delta < min_rss:
            continue
        out.append(
            finding(
                "large_result_set",
                "warning",
                f"Large result set: up to {instances} objects and +{delta / MIB:.1f} MiB in one request on one "
                f"statement of {a['routes'][0] if a['routes'] else '?'} ({a['requests']} requests ran it"
                + (", some overlapping others: their memory is shared" if a["shared"] else "")
                + ")",
                sql,
                {
                    "statement": sql,
                    "id": short_id(sql),
                    "instances": instances,
                    "peak_bytes": delta,
                    "rows_per_request": a["rows"] // max(a["requests"], 1),
                    "requests": a["requests"],
                    "overlapping": bool(a["shared"]),
                    "routes": a["routes"],
                    "impact_bytes": int(delta) * max(a["heavy_requests"], 1),
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
                    "impact_bytes": 0,
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
                "impact_bytes": int(size["p95"]) * int(size["count"]),
            },
            [sessions["max_ref"], *[g["ref"] for g in growing[:2]], *[k["ref"] for k in keys[:2]]],
            "Keep identifiers in the session, not objects or growing lists: store the id and reload it per "
            "request, or keep the data server-side (database, Redis with a TTL); trim lists that are appended "
            "to on every request. A cookie session (Starlette SessionMiddleware) also travels with every request.",
        )
    ]

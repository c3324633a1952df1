"""Aggregates of the full-detail sections (SQL statements, models, loader criteria, engines, sessions),
of dumps, crash records and cache observations, in SQL over the filtered views ``s``, ``d``, ``c``, ``st``.
"""

from __future__ import annotations

from typing import Any

from memprof.analysis.aggregates import FIRST, Refs
from memprof.analysis.engine import Engine
from memprof.analysis.stats import stat_block, stat_sql

TOP = 10
AT = "{'f': file_id, 'l': line}"
_STMTS = """SELECT file_id, line, route, time, shared, mp_text(x.sql) AS sql, x.count AS count, x.total_ms AS total_ms,
        x.max_ms AS max_ms, x.rows AS rows, x.instances AS instances,
        coalesce(x.heap_delta_max, x.rss_delta_max, 0) AS delta, coalesce(x.lazy, false) AS lazy,
        coalesce(x.n_plus_one, false) AS n1, coalesce(mp_text(x.loop), mp_text(x.frame)) AS frame, false AS flagged_only
    FROM (SELECT file_id, line, route, time, shared, unnest(statements) AS x FROM s WHERE statements IS NOT NULL)
    UNION ALL
    SELECT file_id, line, route, time, shared, mp_text(x.sql), x.count, 0, 0, 0, 0, 0, false, true,
        coalesce(mp_text(x.loop), mp_text(x.frame)), true
    FROM (SELECT file_id, line, route, time, shared, unnest(flagged) AS x FROM s WHERE flagged IS NOT NULL)"""


def _top(counts: list[tuple[Any, ...]], n: int) -> dict[Any, list[Any]]:
    """``[(key, value, count, first seen)]`` -> ``{key: [value, ...]}``, the ``n`` most counted per key."""
    out: dict[Any, list[Any]] = {}
    for key, value, _n, _first in sorted(counts, key=lambda r: (str(r[0]), -(r[2] or 0), r[3])):
        lst = out.setdefault(key, [])
        if len(lst) < n:
            lst.append(value)
    return out


def statements(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Every distinct SQL statement over the requests that ran it (or flagged it as an N+1)."""
    e.sql(f"CREATE OR REPLACE TEMP TABLE q AS {_STMTS}")
    # (the requests with an N+1 counted from the list of their records: a DISTINCT aggregate costs as much
    # as all the others together)
    rows = e.dicts(
        f"""SELECT * EXCLUDE (n1_at), coalesce(len(list_distinct(n1_at)), 0) AS n_plus_one,
            list_sort(list_distinct(n1_at))[:5] AS n1_at
        FROM (SELECT sql, sum(count) FILTER (NOT flagged_only) AS executions,
            count(*) FILTER (NOT flagged_only) AS requests, sum(total_ms) AS total_ms, max(max_ms) AS max_ms,
            max(count) AS max_count, sum(rows) AS rows, sum(instances) AS instances, max(delta) AS max_rss_delta,
            arg_max({AT}, (delta, -file_id, -line)) FILTER (NOT flagged_only) AS worst_at, bool_or(lazy) AS lazy,
            list({AT}) FILTER (n1 OR flagged_only) AS n1_at,
            bool_or(shared) FILTER (NOT flagged_only) AS shared,
            count(*) FILTER (NOT flagged_only AND ((mi > 0 AND instances * 2 >= mi) OR (md > 0 AND delta * 2 >= md)))
                AS heavy,
            arg_max({{'rows': rows, 'instances': instances, 'delta': delta, 'f': file_id, 'l': line}},
                    (rows / instances, -file_id, -line)) FILTER (instances > 0 AND rows > instances) AS cartesian,
            arg_max({{'instances': instances, 'delta': delta, 'f': file_id, 'l': line}},
                    (coalesce(instances, 0), delta, -file_id, -line)) FILTER (NOT flagged_only) AS large
        FROM (SELECT *, max(instances) OVER (PARTITION BY sql) AS mi, max(delta) OVER (PARTITION BY sql) AS md
              FROM q) GROUP BY sql)"""
    )
    # every run counts on the routes and frames; an N+1 once per request (it may be listed twice in one)
    counts = {
        name: _top(
            e.rows(f"""SELECT sql, {col}, {n}, min((file_id, line)) FROM q WHERE {col} IS NOT NULL {cond}
                              GROUP BY sql, {col}"""),
            3 if col == "route" else 1,
        )
        for name, col, cond, n in (
            ("routes", "route", "AND NOT flagged_only", "count(*)"),
            ("frames", "frame", "AND NOT flagged_only", "count(*)"),
            ("n1_routes", "route", "AND (n1 OR flagged_only)", "count(DISTINCT (file_id, line))"),
            ("n1_frames", "frame", "AND (n1 OR flagged_only)", "count(DISTINCT (file_id, line))"),
        )
    }
    e.sql("DROP TABLE q")
    out = []
    for r in rows:
        sql = r["sql"]
        out.append(
            {
                "sql": sql, "executions": int(r["executions"] or 0), "requests": r["requests"],
                "total_ms": round(float(r["total_ms"] or 0), 3), "max_ms": round(float(r["max_ms"] or 0), 3),
                "max_count": int(r["max_count"] or 0), "rows": int(r["rows"] or 0), "instances": int(r["instances"] or 0),
                "max_rss_delta": int(r["max_rss_delta"] or 0), "lazy": bool(r["lazy"]), "n_plus_one": r["n_plus_one"],
                "shared": bool(r["shared"]), "heavy_requests": int(r["heavy"] or 0),
                "peak": int(r["cartesian"]["delta"] or 0) if r["cartesian"] else 0,
                "worst_ref": refs(r["worst_at"]["f"], r["worst_at"]["l"]) if r["worst_at"] else None,
                "n_plus_one_refs": [refs(a["f"], a["l"]) for a in r["n1_at"] or ()],
                "cartesian": (r["cartesian"]["rows"], r["cartesian"]["instances"], refs(r["cartesian"]["f"], r["cartesian"]["l"]))
                if r["cartesian"] else None,
                "large": (r["large"]["instances"], r["large"]["delta"], refs(r["large"]["f"], r["large"]["l"]))
                if r["large"] else None,
                **{k: counts[k].get(sql, []) for k in counts},
            }
        )  # fmt: skip
    out.sort(key=lambda x: x["sql"])
    return out


def statement_row(st: dict[str, Any]) -> dict[str, Any]:
    """A statement as the summary lists it."""
    return {"sql": st["sql"], "executions": st["executions"], "requests": st["requests"], "total_ms": st["total_ms"],
            "max_ms": st["max_ms"], "max_per_request": st["max_count"], "rows": st["rows"], "instances": st["instances"],
            "max_rss_delta": st["max_rss_delta"], "lazy": st["lazy"], "n_plus_one_requests": st["n_plus_one"],
            "frame": (st["frames"] or [None])[0], "routes": st["routes"], "ref": st["worst_ref"]}  # fmt: skip


def models(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Per mapped class: instances loaded, created, updated, deleted, requests, the most in one request."""
    rows = e.dicts(
        f"""SELECT mp_name(m.key) AS model, sum(m.value.loaded) AS loaded, sum(m.value.created) AS created,
            sum(m.value.updated) AS updated, sum(m.value.deleted) AS deleted, count(*) AS requests,
            max(m.value.loaded) AS max_loaded, arg_max({AT}, (coalesce(m.value.loaded, 0), -file_id, -line)) AS at
        FROM (SELECT file_id, line, unnest(map_entries(models)) AS m FROM s WHERE models IS NOT NULL) GROUP BY ALL"""
    )
    routes = _top(e.rows(
        """SELECT mp_name(m.key), route, coalesce(sum(m.value.loaded), 0), min((file_id, line))
           FROM (SELECT file_id, line, route, unnest(map_entries(models)) AS m FROM s WHERE models IS NOT NULL)
           GROUP BY ALL"""), 3)  # fmt: skip
    return [{"model": r["model"], "loaded": int(r["loaded"] or 0), "created": int(r["created"] or 0),
             "updated": int(r["updated"] or 0), "deleted": int(r["deleted"] or 0), "requests": r["requests"],
             "max_loaded": int(r["max_loaded"] or 0), "ref": refs(r["at"]["f"], r["at"]["l"]),
             "routes": routes.get(r["model"], [])} for r in rows]  # fmt: skip


def scopes(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Per (class, loader criteria): applications, requests, the most in one request, duplicates."""
    unnested = """SELECT file_id, line, route, mp_name(e.key) AS cls, unnest(e.value) AS x
        FROM (SELECT file_id, line, route, unnest(map_entries(scopes)) AS e FROM s WHERE scopes IS NOT NULL)"""
    rows = e.dicts(
        f"""SELECT cls, mp_text(coalesce(x.criteria, '')) AS criteria, sum(x.applied) AS applied, count(*) AS requests,
            max(x.applied) AS max_applied, sum(x.duplicates) AS duplicates,
            mp_name(arg_min(x.kind, ({FIRST}))) AS kind, mp_text(arg_min(x."where", ({FIRST}))) AS "where",
            arg_max({AT}, (coalesce(x.applied, 0), -file_id, -line)) AS at
        FROM ({unnested}) GROUP BY ALL"""
    )
    routes = _top(e.rows(f"""SELECT (cls, mp_text(coalesce(x.criteria, ''))), route, count(*), min((file_id, line))
                             FROM ({unnested}) GROUP BY ALL"""), 3)  # fmt: skip
    return [{"model": r["cls"], "criteria": r["criteria"], "applied": int(r["applied"] or 0), "requests": r["requests"],
             "max_applied": int(r["max_applied"] or 0), "duplicates": int(r["duplicates"] or 0), "kind": r["kind"],
             "where": r["where"], "ref": refs(r["at"]["f"], r["at"]["l"]),
             "routes": routes.get((r["cls"], r["criteria"]), [])} for r in rows]  # fmt: skip


def engines(e: Engine) -> list[dict[str, Any]]:
    """Per worker and engine: its compiled cache at the last observation, the largest, its capacity."""
    return e.dicts(
        f"""SELECT worker, mp_name(x.name) AS name, arg_max(x.compiled_cache, (time, {FIRST})) AS compiled_cache,
            max(x.compiled_cache) AS max, arg_min(x.compiled_cache_max, (time, {FIRST})) AS maxsize,
            count(*) AS observations
        FROM (SELECT worker, time, file_id, line, unnest(engines) AS x FROM s WHERE engines IS NOT NULL)
        WHERE x.compiled_cache IS NOT NULL GROUP BY ALL ORDER BY worker, name"""
    )


def sessions(e: Engine, refs: Refs) -> dict[str, Any] | None:
    """Session sizes, the largest keys, sessions that grow across requests and where they grow."""
    row = e.one(f"SELECT {stat_sql('session_size', 'size')}, arg_max({AT}, (session_size, -file_id, -line)) AS max_at "
                "FROM s WHERE session_size IS NOT NULL")  # fmt: skip
    if not row["size_n"]:
        return None
    keys = e.dicts(
        f"""SELECT mp_name(k.key) AS key, max(k.size) AS max_size, count(*) AS seen, arg_max({AT}, (k.size, -file_id, -line)) AS at
        FROM (SELECT file_id, line, unnest(session_keys) AS k FROM s WHERE session_keys IS NOT NULL)
        GROUP BY ALL ORDER BY max_size DESC, key LIMIT {TOP}"""
    )
    per = e.dicts(
        f"""SELECT session_id AS id_hash, arg_min(session_size, (time, {FIRST})) AS first,
            arg_max(session_size, (time, {FIRST})) AS last, count(*) AS requests, max(session_size) AS max,
            arg_max({AT}, (time, {FIRST})) AS last_at,
            arg_max(route, (session_size, -time, -file_id, -line)) AS route_at_max
        FROM s WHERE session_id IS NOT NULL AND session_size IS NOT NULL GROUP BY session_id"""
    )
    grows = [p for p in per if p["requests"] >= 2 and p["last"] > p["first"]]
    growing = sorted(
        ({"id_hash": p["id_hash"], "first": p["first"], "last": p["last"], "max": p["max"], "requests": p["requests"],
          "growth": p["last"] - p["first"], "ref": refs(p["last_at"]["f"], p["last_at"]["l"])} for p in grows),
        key=lambda g: (-g["growth"], g["id_hash"]),
    )  # fmt: skip
    grown_on: dict[str, int] = {}
    for p in grows:
        grown_on[p["route_at_max"]] = grown_on.get(p["route_at_max"], 0) + p["max"] - p["first"]
    return {
        "requests": row["size_n"],
        "size": stat_block(row, "size"),
        "largest_keys": [
            {
                "key": k["key"],
                "max_size": k["max_size"],
                "seen": k["seen"],
                "ref": refs(k["at"]["f"], k["at"]["l"]),
            }
            for k in keys
        ],
        "sessions": len(per),
        "growing": growing[:TOP],
        "max_ref": refs(row["max_at"]["f"], row["max_at"]["l"]),
        "grown_on": [
            {"route": r, "bytes": n} for r, n in sorted(grown_on.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        ],
    }


def dumps(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Every filtered dump, oldest first."""
    rows = e.dicts(f"SELECT * EXCLUDE (caches, frames, host, pid) FROM d ORDER BY coalesce(time, 0), {FIRST}")
    for r in rows:
        r["ref"] = refs(r.pop("file_id"), r.pop("line"))
        r["limit"] = r.pop("mem_limit")
        r["objects"] = {o["type"]: o["count"] for o in r["objects"] or ()}
    return rows


def dump_frames(e: Engine) -> list[tuple[str, int]]:
    """Stack frames by the number of dumps they appear in (each counted once per dump)."""
    return [
        (f, n)
        for f, n in e.rows(
            "SELECT frame, count(*) FROM (SELECT unnest(frames) AS frame FROM d) GROUP BY frame"
        )
    ]


def crashes(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Every filtered crash record, oldest first."""
    rows = e.dicts(f"SELECT * FROM c ORDER BY coalesce(last_seen, 0), {FIRST}")
    out = []
    for r in rows:
        ref = refs(r.pop("file_id"), r.pop("line"))
        r["limit"] = r.pop("mem_limit")
        out.append({"ref": ref, **r, "inflight": list(r["inflight"] or ())})
    return sorted(out, key=lambda x: (x["last_seen"] or 0, x["ref"] or ""))


def caches(e: Engine, refs: Refs) -> list[dict[str, Any]]:
    """Per worker and cache: first and last size (with their records), min, max, observations, and how
    often it shrank between two observations in time order."""
    rows = e.dicts(
        f"""WITH o AS (
            SELECT worker, time, file_id, line, unnest(caches) AS x FROM st WHERE caches IS NOT NULL
            UNION ALL SELECT worker, time, file_id, line, unnest(caches) FROM d WHERE caches IS NOT NULL AND time IS NOT NULL),
        l AS (SELECT *, x.size < lag(x.size) OVER (PARTITION BY worker, mp_name(x.name) ORDER BY time, {FIRST}) AS shrank FROM o)
        SELECT worker, mp_name(x.name) AS name, mp_name(arg_min(x.kind, (time, {FIRST}))) AS kind,
            arg_min(x.maxsize, (time, {FIRST})) AS maxsize,
            arg_min(coalesce(x.unbounded, x.maxsize IS NULL), (time, {FIRST})) AS unbounded,
            arg_min(x.size, (time, {FIRST})) AS first, arg_max(x.size, (time, {FIRST})) AS last,
            arg_min(x.bytes_estimate, (time, {FIRST})) AS bytes_first,
            arg_max(x.bytes_estimate, (time, {FIRST})) AS bytes_last,
            min(x.size) AS min, max(x.size) AS max, count(*) AS observations, count(*) FILTER (shrank) AS decreases,
            min(time) AS t0, max(time) AS t1, arg_min({AT}, (time, {FIRST})) AS first_at,
            arg_max({AT}, (time, {FIRST})) AS last_at
        FROM l GROUP BY ALL"""
    )
    out = [{"worker": r["worker"], "name": r["name"], "kind": r["kind"], "maxsize": r["maxsize"],
            "unbounded": bool(r["unbounded"]), "first": r["first"], "last": r["last"], "max": r["max"],
            "bytes_first": r["bytes_first"], "bytes_last": r["bytes_last"],
            "observations": r["observations"], "decreases": r["decreases"], "span_s": round(r["t1"] - r["t0"], 3),
            "refs": [refs(r["first_at"]["f"], r["first_at"]["l"]), refs(r["last_at"]["f"], r["last_at"]["l"])]}
           for r in rows]  # fmt: skip
    out.sort(key=lambda r: (-(r["last"] - r["first"]), r["worker"] or "", r["name"] or ""))
    return out


def sql_outside(e: Engine, refs: Refs) -> dict[str, Any] | None:
    """SQL run outside profiled requests, from each worker's latest state record that reports it."""
    latest = e.dicts(
        f"""SELECT worker, arg_max(outside, (time, {FIRST})) AS o, arg_max({AT}, (time, {FIRST})) AS at
        FROM st WHERE outside IS NOT NULL GROUP BY worker"""
    )
    if not latest:
        return None
    statements: dict[str, list[float]] = {}
    for w in latest:
        for x in w["o"]["statements"] or ():
            acc = statements.setdefault(str(x["sql"])[:2000], [0, 0.0])
            acc[0] += int(x["count"] or 0)
            acc[1] += float(x["total_ms"] or 0)
    top = sorted(statements.items(), key=lambda kv: (-kv[1][1], kv[0]))[:10]
    return {
        "workers": len(latest),
        "count": sum(int(w["o"]["count"] or 0) for w in latest),
        "total_ms": round(sum(float(w["o"]["total_ms"] or 0) for w in latest), 3),
        "statements": [{"sql": sql, "count": int(n), "total_ms": round(ms, 3)} for sql, (n, ms) in top],
        "refs": sorted(str(refs(w["at"]["f"], w["at"]["l"])) for w in latest)[:5],
    }

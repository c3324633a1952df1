"""Statistics of the filtered samples (view ``s``), in SQL: overall, per route, per phase, per worker,
the largest growths, and the per-worker and per-family figures the process-level findings need.

Every function takes the :class:`~memprof.analysis.engine.Engine` and a ``Refs`` (file id and line ->
``path:line``) and returns plain data. Ties go to the record read first (file order, then line), as a
reader going through the files would have it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memprof.analysis.engine import Engine, quote
from memprof.analysis.stats import stat_block, stat_sql

Refs = Callable[[int | None, int | None], str | None]
FIRST = "file_id, line"  # reading order
FAMILY = (
    "CASE WHEN {s} = '' OR {s}[1] = '{{' THEN coalesce(nullif(route, ''), '/') ELSE '/' || {s} END".format(
        s="split_part(trim(route, '/'), '/', 1)"
    )
)
"""SQL of a route's family: its first path segment (``/admin/users/{id}`` -> ``/admin``)."""

TOP_HIGH = 25


def overall(e: Engine) -> dict[str, Any]:
    """Counts, window, the rss and growth stat blocks of every filtered sample."""
    row = e.one(f"SELECT count(*) AS n, min(time) AS t0, max(time) AS t1, {stat_sql('rss_peak', 'rss')}, "
                f"{stat_sql('growth', 'growth')} FROM s")  # fmt: skip
    return {
        "samples": int(row["n"]),
        "window": {"start": row["t0"], "end": row["t1"]},
        "memory": {"rss": stat_block(row, "rss"), "growth": stat_block(row, "growth")},
    }


def high_threshold(memory: dict[str, Any]) -> int:
    """Growth (bytes) at and above which a sample counts as high-memory: the overall p95, at least 1 byte."""
    return max(int(memory["growth"]["p95"]), 1)


def high_samples(e: Engine, refs: Refs, n: int = TOP_HIGH) -> list[dict[str, Any]]:
    """The largest growths, largest first (among equal ones, the first read)."""
    rows = e.dicts(
        f"SELECT file_id, line, route, worker, time, growth FROM s ORDER BY growth DESC, {FIRST} LIMIT {n}"
    )
    return [{"ref": refs(r["file_id"], r["line"]), "route": r["route"], "worker": r["worker"], "time": r["time"],
             "growth": r["growth"]} for r in rows]  # fmt: skip


def route_rows(e: Engine, refs: Refs, threshold: int, dumps_by_route: dict[str, int]) -> list[dict[str, Any]]:
    """Per route template: stat blocks of rss and growth, durations, high-memory requests, statuses."""
    # (the durations' quantiles in a statement of their own: exact quantiles hold every value, and three
    # columns' worth of 5,000,000 samples did not fit the engine's memory at once)
    durations = dict(e.rows("SELECT route, quantile_disc(duration_ms, [0.5, 0.95]) FROM s GROUP BY route"))
    rows = e.dicts(
        f"""SELECT route, count(*) AS count, {stat_sql("rss_peak", "rss")}, {stat_sql("growth", "growth")},
            max(duration_ms) AS dmax, count(*) FILTER (growth >= {threshold}) AS high,
            count(*) FILTER (error IS NOT NULL AND error <> '') AS errors,
            histogram(coalesce(status, 0)) AS statuses,
            arg_max({{'f': file_id, 'l': line}}, (growth, -file_id, -line)) AS max_at
        FROM s GROUP BY route"""
    )
    out = []
    for r in rows:
        p50, p95 = durations[r["route"]]
        out.append(
            {
                "route": r["route"],
                "count": r["count"],
                "rss": stat_block(r, "rss"),
                "growth": stat_block(r, "growth"),
                "duration_ms": {
                    "p50": round(float(p50), 3),
                    "p95": round(float(p95), 3),
                    "max": round(float(r["dmax"]), 3),
                },
                "high": r["high"],
                "dumps": dumps_by_route.get(r["route"], 0),
                "errors": r["errors"],
                "statuses": {str(k): v for k, v in sorted(r["statuses"].items())},
                "max_ref": refs(r["max_at"]["f"], r["max_at"]["l"]),
            }
        )
    total_high = sum(r["high"] for r in out) or 1
    for r in out:
        r["high_share"] = round(r["high"] / total_high, 4)
    out.sort(key=lambda r: (-r["high"], -r["growth"]["p95"], r["route"]))
    return out


# One row per interval of a sample: its previous checkpoint's name (null for a span: a checkpoint that
# carries its own rss_before), its own name, its growth (heap where both checkpoints have it) and position. Phase names are built after grouping.
_INTERVALS = """SELECT file_id, line, growth, i, CASE WHEN cur.rss_before IS NULL THEN prev.name END AS a, cur.name AS b,
        CASE WHEN cur.rss_before IS NOT NULL THEN cur.rss - cur.rss_before
             ELSE coalesce(cur.heap - prev.heap, cur.rss - prev.rss) END AS g
    FROM (SELECT file_id, line, growth, i, checkpoints[i + 1] AS cur,
                 CASE WHEN i > 0 THEN checkpoints[i] END AS prev  -- (by index: half the cost of unnesting)
          FROM (SELECT file_id, line, growth, checkpoints, unnest(range(len(checkpoints))) AS i
                FROM s WHERE len(checkpoints) > 0 {where}))
    WHERE cur.rss_before IS NOT NULL OR prev IS NOT NULL"""
# A sort key: the largest growth, then the first read (its file id and line packed in the low 64 bits).
_KEY = (
    "g::HUGEINT * 4294967296 * 4294967296 + (18446744073709551615 - (file_id::HUGEINT * 4294967296 + line))"
)
_LOW = (1 << 64) - 1


def _unkey(key: int) -> tuple[int, int, int]:
    """``(growth, file_id, line)`` of a :data:`_KEY`."""
    order = _LOW - (key & _LOW)
    return key >> 64, order >> 32, order & 0xFFFFFFFF


def _phase(a: str | None, b: str | None) -> str:
    name = str(b) if a is None else f"{a}→{b}"
    return name if len(name) <= 300 else name[:299] + "…"


def phase_rows(e: Engine, refs: Refs, threshold: int) -> list[dict[str, Any]]:
    """Per phase (the interval between two checkpoints, or a checkpoint span): count, mean and max growth
    (with its record), and ``high``: in how many high-memory samples this phase grew the most."""
    acc: dict[str, list[Any]] = {}  # phase -> [count, total, max key]
    for a, b, n, total, key in e.rows(
        f"SELECT a, b, count(*), sum(g), max({_KEY}) FROM ({_INTERVALS.format(where='')}) GROUP BY a, b"
    ):
        cur = acc.setdefault(_phase(a, b), [0, 0, int(key)])
        cur[0] += n
        cur[1] += int(total)
        cur[2] = max(cur[2], int(key))
    high: dict[str, int] = {}
    for a, b, n in e.rows(
        f"""SELECT top.a, top.b, count(*) FROM (
            SELECT arg_max({{'a': a, 'b': b}}, g::HUGEINT * 65536 - i) AS top
            FROM ({_INTERVALS.format(where=f"AND growth >= {threshold}")}) WHERE g > 0 GROUP BY file_id, line)
        GROUP BY ALL"""
    ):
        high[_phase(a, b)] = high.get(_phase(a, b), 0) + n
    out = []
    for phase, (n, total, key) in acc.items():
        top, fid, line = _unkey(key)
        out.append(
            {
                "phase": phase,
                "count": n,
                "mean": round(total / n, 1) if n else 0.0,
                "max": max(top, 0),
                "high": high.get(phase, 0),
                "max_ref": refs(fid, line) if top > 0 else None,
            }
        )
    out.sort(key=lambda r: (-r["high"], -r["max"], r["phase"]))
    return out


def worker_rows(e: Engine) -> list[dict[str, Any]]:
    """Per worker: samples, first and last time, RSS at the first and last request and its maximum, limit."""
    return e.dicts(
        f"""SELECT worker, count(*) AS samples, min(time) AS first_time, max(time) AS last_time,
            arg_min(rss_end, (time, {FIRST})) AS rss_first, arg_max(rss_end, (time, {FIRST})) AS rss_last,
            max(rss_end) AS rss_max,
            arg_max(mem_limit, ({FIRST})) FILTER (mem_limit IS NOT NULL AND mem_limit <> 0) AS "limit"
        FROM s GROUP BY worker ORDER BY worker"""
    )


def common_limit(workers: list[dict[str, Any]]) -> int | None:
    """The memory limit most samples reported (each worker's latest, weighted by its samples)."""
    weights: dict[int, int] = {}
    for w in workers:
        if w["limit"]:
            weights[int(w["limit"])] = weights.get(int(w["limit"]), 0) + w["samples"]
    return max(weights, key=lambda k: (weights[k], k)) if weights else None


def families(e: Engine, threshold: int) -> list[dict[str, Any]]:
    """Per route family: requests, high-memory requests, growth p50/p95, objects loaded p50 (samples that
    counted them), its routes by p95 growth."""
    # (both growth quantiles from one list of values: two quantile aggregates held two copies of them)
    return e.dicts(
        f"""SELECT * EXCLUDE (gq), gq[1] AS growth_p50, gq[2] AS growth_p95 FROM (
            SELECT fam AS family, count(*) AS requests, count(*) FILTER (growth >= {threshold}) AS high,
                quantile_disc(growth, [0.5, 0.95]) AS gq, quantile_disc(instances, 0.5) AS objects_p50
            FROM (SELECT {FAMILY} AS fam, growth, instances FROM s) GROUP BY fam) ORDER BY family"""
    )


REST_VALUES = 4_000_000
"""Values one query of :func:`family_rests` holds for its quantiles at most (8 bytes each, about twice that
while threads merge): one filter per family over the rest of the traffic held every family's rest at once
(ten families of 2,000,000 samples ran out of the engine's memory)."""


def family_rests(e: Engine, families: list[dict[str, Any]], total: int) -> dict[str, dict[str, Any]]:
    """For each of ``families`` (``family`` and its ``requests``, of ``total`` samples): growth p50/p95
    and objects p50 of every sample outside it, and its routes by p95 growth (at most 5). Families share
    a scan as long as their rests fit :data:`REST_VALUES`; a sample's family is known by its route (the
    family of each distinct route computed once: a string function over every sample cost more than the
    quantiles)."""
    if not families:
        return {}
    wanted = {str(fam["family"]) for fam in families}
    routes: dict[str, list[str]] = {}
    for route, fam in e.rows(
        f"SELECT route, {FAMILY} FROM (SELECT DISTINCT route FROM s WHERE route IS NOT NULL)"
    ):
        if fam in wanted:
            routes.setdefault(fam, []).append(route)
    batches: list[list[str]] = [[]]
    held = 0
    for fam in families:
        size = 2 * max(total - int(fam["requests"]), 1)  # its rest's growth and objects
        if batches[-1] and held + size > REST_VALUES:
            batches.append([])
            held = 0
        batches[-1].append(str(fam["family"]))
        held += size
    out: dict[str, dict[str, Any]] = {}
    for batch in batches:
        outside = [f"route NOT IN ({', '.join(quote(r) for r in routes.get(f, ()))})" if routes.get(f) else "true"
                   for f in batch]  # fmt: skip
        columns = ", ".join(
            f"quantile_disc(growth, [0.5, 0.95]) FILTER ({cond}) AS g{i}, "
            f"quantile_disc(instances, 0.5) FILTER ({cond}) AS o{i}"
            for i, cond in enumerate(outside)
        )
        row = e.one(f"SELECT {columns} FROM s WHERE route IS NOT NULL")
        for i, family in enumerate(batch):
            growth = row[f"g{i}"] or [0, 0]
            out[family] = {"growth_p50": growth[0] or 0, "growth_p95": growth[1] or 0,
                           "objects_p50": row[f"o{i}"] or 0, "routes": []}  # fmt: skip
    for family, members in routes.items():
        out[family]["routes"] = [
            route
            for (route,) in e.rows(
                f"""SELECT route FROM s WHERE route IN ({", ".join(quote(r) for r in members)})
                    GROUP BY route ORDER BY quantile_disc(growth, 0.95) DESC, route LIMIT 5"""
            )
        ]
    return out

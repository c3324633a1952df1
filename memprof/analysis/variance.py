"""What ``state_dependent_variance`` is judged on, in SQL over the filtered samples (view ``s``): per
route, the spread of its per-request memory (``growth``: the heap peak where recorded) and how well each
recorded variable explains it: Pearson r of session size, ORM instances, rows fetched and query count, and
for a route with path parameters the correlation ratio (eta) of the raw path, when paths repeat.

Routes without heap figures are also judged on the ORM instances per request: RSS hides what a warm heap
reuses, the objects loaded do not."""

from __future__ import annotations

from typing import Any

from memprof.analysis.aggregates import Refs
from memprof.analysis.engine import Engine
from memprof.analysis.stats import stat_block, stat_sql

VARIABLES = ("session_size", "instances", "rows", "query_count")
_ROWS = "coalesce(TRY_CAST(list_sum(list_transform(statements, lambda x: x.rows)) AS BIGINT), 0)"


def _scores(e: Engine, measure: str, min_samples: int, where: str) -> dict[str, dict[str, Any]]:
    variables = [v for v in VARIABLES if v != measure]
    items = ", ".join(
        f"coalesce(max({v}) > 0, false) AS has_{v}, corr({measure}, {v}) FILTER ({v} >= 0) AS r_{v}, "
        f"count({v}) FILTER ({v} >= 0) AS n_{v}"
        for v in variables
    )
    rows = e.dicts(
        f"""SELECT route, {stat_sql(measure, "m")}, {items}, bool_and(heap_peak IS NOT NULL) AS heap,
            arg_max({{'f': file_id, 'l': line}}, ({measure}, -file_id, -line)) AS max_at
        FROM (SELECT *, {_ROWS} AS rows FROM s) WHERE {where}
        GROUP BY route HAVING count({measure}) >= {int(min_samples)} ORDER BY route"""
    )
    # eta of the raw path: the share of the spread between paths, for paths seen twice or more
    eta = dict(
        e.rows(
            f"""SELECT route, sqrt(greatest(1 - sum(within) / nullif(sum(total), 0), 0)) FROM (
                SELECT route, path, count(*) OVER (PARTITION BY route, path) AS per_path,
                       ({measure} - avg({measure}) OVER (PARTITION BY route, path)) ^ 2 AS within,
                       ({measure} - avg({measure}) OVER (PARTITION BY route)) ^ 2 AS total
                FROM (SELECT *, {_ROWS} AS rows FROM s) WHERE {where} AND strpos(route, '{{') > 0)
            WHERE per_path >= 2 GROUP BY route HAVING count(DISTINCT path) >= 2"""
        )
    )
    out = {}
    for r in rows:
        scores = {}
        for v in variables:
            if r[f"has_{v}"]:
                corr = r[f"r_{v}"]
                scores[v] = 0.0 if corr is None or corr != corr or r[f"n_{v}"] < 3 else float(corr)
        if eta.get(r["route"]) is not None:
            scores["path"] = float(eta[r["route"]])
        out[r["route"]] = {"route": r["route"], "measure": measure, "heap": bool(r["heap"]),
                           "growth": stat_block(r, "m"), "scores": scores, "max_at": r["max_at"]}  # fmt: skip
    return out


def route_variance(e: Engine, refs: Refs, min_samples: int) -> list[dict[str, Any]]:
    """Per route with ``min_samples`` samples or more: the stat block of its per-request memory and the
    scores of the variables that may explain it; for a route without heap figures, a second entry on the
    ORM instances per request (``measure`` says which)."""
    out = []
    by_growth = _scores(e, "growth", min_samples, "true")
    by_instances = _scores(e, "instances", min_samples, "heap_peak IS NULL AND instances IS NOT NULL")
    for table in (by_growth, by_instances):
        for v in table.values():
            if v["measure"] == "instances" and by_growth.get(v["route"], {}).get("heap"):
                continue
            v["max_ref"] = refs(v["max_at"]["f"], v["max_at"]["l"])
            del v["max_at"]
            out.append(v)
    return out

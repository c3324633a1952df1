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
    # eta of the raw path: the share of the spread between paths, for paths seen twice or more. From
    # per-path counts, means and variances: a row's squared distance to the route's mean is its path's
    # variance plus the squared distance between the path's mean and the route's (no window, no sort).
    values = f"""SELECT route, path, {measure} AS x FROM (SELECT *, {_ROWS} AS rows FROM s)
                  WHERE {where} AND strpos(route, '{{') > 0"""
    eta = dict(
        e.rows(
            f"""WITH v AS ({values}),
                p AS (SELECT route, path, count(*) AS n, count(x) AS nx, avg(x) AS mean, var_pop(x) AS var
                      FROM v GROUP BY route, path),
                r AS (SELECT route, avg(x) AS mean FROM v GROUP BY route)
            SELECT route, sqrt(greatest(1 - sum(p.nx * p.var)
                                 / nullif(sum(p.nx * p.var + p.nx * (p.mean - r.mean) ^ 2), 0), 0))
            FROM p JOIN r USING (route)
            WHERE p.n >= 2 GROUP BY route HAVING count(path) >= 2"""
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

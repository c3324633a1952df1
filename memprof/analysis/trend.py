"""The aggregates the leak finding is judged on, in SQL over the filtered samples (view ``s``): per worker,
the trend of its resting memory (heap where every sample of it records one, else RSS, at request start)
over its requests, and what its requests retain (end - start), per route.

A leak keeps rising at a steady rate: the slope over the second half of a worker's requests is as steep as
over the first, and the rise fits a line. Warm-up rises, then levels off: the second half is flat.
"""

from __future__ import annotations

from typing import Any

from memprof.analysis.aggregates import FIRST, Refs
from memprof.analysis.engine import Engine

ORDERED = "wo"
"""The temp table :func:`order_requests` fills and the trends read."""


def order_requests(e: Engine, min_samples: int) -> str:
    """Number the requests of every worker with ``min_samples`` samples or more in its order (time, then
    reading order), once for :func:`worker_trends` and :func:`retained_by_route` (sorting them is most of
    their cost); returns the temp table's name. Its columns: ``rest``, the resting figure, and ``kept``,
    what the request retained (end - start), both heap when every sample of the worker records it
    (``heap_all``); ``own_rest``/``own_kept``, the same from the sample's own figures (heap where it has
    them); ``k``, the request's place in its worker's order; ``n``, the worker's samples; ``next_rest`` and
    ``next_shared``, the next request's ``own_rest`` and ``shared``."""
    e.sql(
        f"""CREATE OR REPLACE TEMP TABLE {ORDERED} AS
        WITH w AS (SELECT worker, count(*) AS n, bool_and(heap_start IS NOT NULL AND heap_end IS NOT NULL) AS heap_all
                   FROM s GROUP BY worker HAVING count(*) >= {int(min_samples)})
        SELECT worker, route, time, file_id, line, mem_limit, rss_start, shared, heap_all, n,
            CASE WHEN heap_all THEN heap_start ELSE rss_start END AS rest,
            CASE WHEN heap_all THEN heap_end - heap_start ELSE rss_end - rss_start END AS kept,
            coalesce(heap_start, rss_start) AS own_rest, coalesce(heap_end - heap_start, rss_end - rss_start) AS own_kept,
            row_number() OVER o - 1 AS k, lead(own_rest) OVER o AS next_rest, lead(shared) OVER o AS next_shared
        FROM s JOIN w USING (worker) WINDOW o AS (PARTITION BY worker ORDER BY time, {FIRST})"""
    )
    return ORDERED


def worker_trends(e: Engine, refs: Refs, ordered: str) -> list[dict[str, Any]]:
    """For each worker of ``ordered`` (:func:`order_requests`): ``source`` (heap or rss), quarter medians of
    the resting figure, slopes per request over the first and second half and the last two quarters, the
    fit (R²) of the second half, what its requests retained in total, RSS first/last, time span, limit, first and last record,
    and the share of its samples on routes with five requests or more (a steady load, not a test session)."""
    rows = e.dicts(
        f"""WITH o AS (FROM {ordered}),
        q AS (SELECT worker, list(ys[len(ys) // 2 + 1] ORDER BY quarter) AS quarters
              FROM (SELECT worker, (4 * (k + 1) + n - 1) // n - 1 AS quarter, list_sort(list(rest)) AS ys
                    FROM o GROUP BY ALL) GROUP BY worker),
        r AS (SELECT worker, coalesce(sum(c) FILTER (c >= 5), 0) AS steady
              FROM (SELECT worker, route, count(*) AS c FROM o GROUP BY ALL) GROUP BY worker),
        a AS (SELECT worker, any_value(n) AS samples, bool_and(heap_all) AS heap,
            regr_slope(rest, k) FILTER (k < n // 2) AS slope_first,
            regr_slope(rest, k) FILTER (k >= n // 2) AS slope_second,
            regr_r2(rest, k) FILTER (k >= n // 2) AS fit_second,
            regr_slope(rest, k) FILTER (k >= n // 2 AND k < 3 * n // 4) AS slope_third,
            regr_slope(rest, k) FILTER (k >= 3 * n // 4) AS slope_last,
            sum(kept::HUGEINT) AS retained, arg_min(rest, k) AS first, arg_max(rest, k) AS last,
            arg_min(rss_start, k) AS rss_first, arg_max(rss_start, k) AS rss_last,
            min(time) AS t0, max(time) AS t1,
            arg_max(mem_limit, k) FILTER (mem_limit IS NOT NULL AND mem_limit <> 0) AS "limit",
            arg_min({{'f': file_id, 'l': line}}, k) AS first_at, arg_max({{'f': file_id, 'l': line}}, k) AS last_at
            FROM o GROUP BY worker)
        SELECT a.*, q.quarters, r.steady FROM a JOIN q USING (worker) JOIN r USING (worker) ORDER BY worker"""
    )
    out = []
    for r in rows:
        out.append(
            {
                **{k: v for k, v in r.items() if k not in ("first_at", "last_at", "retained", "steady")},
                "source": "heap" if r["heap"] else "rss",
                "retained": int(r["retained"] or 0),
                "steady_share": float(r["steady"] or 0) / max(r["samples"], 1),
                "first_ref": refs(r["first_at"]["f"], r["first_at"]["l"]),
                "last_ref": refs(r["last_at"]["f"], r["last_at"]["l"]),
            }
        )
    return out


def retained_by_route(e: Engine, refs: Refs, ordered: str) -> list[dict[str, Any]]:
    """Per worker of ``ordered`` (:func:`order_requests`) and route: requests, median and total retained
    memory, the share of its requests that retained something, and its largest one. What a request
    retained is end - start (heap where recorded), or, when neither it nor the next request of its worker
    overlapped another, the rise of the resting figure up to the next request, if larger: readings shared
    between short requests (see memprof.heap) can give a request's start and end one reading."""
    return [
        {**r, "total": int(r["total"] or 0), "ref": refs(r["at"]["f"], r["at"]["l"])}
        for r in e.dicts(
            f"""SELECT worker, route, count(*) AS requests, quantile_disc(kept, 0.5) AS median,
                sum(kept::HUGEINT) AS total, avg((kept > 0)::INTEGER) AS positive,
                arg_max({{'f': file_id, 'l': line}}, (kept, -file_id, -line)) AS at
            FROM (SELECT worker, route, file_id, line,
                         CASE WHEN NOT coalesce(shared, false) AND NOT coalesce(next_shared, true)
                              THEN greatest(own_kept, next_rest - own_rest) ELSE own_kept END AS kept
                  FROM {ordered})
            GROUP BY ALL ORDER BY worker, total DESC, route"""
        )
    ]

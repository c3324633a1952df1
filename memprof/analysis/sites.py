"""N+1 queries by code site, in SQL over the filtered samples (view ``s``): the statements a request
repeated, grouped by the loop that repeats them (``loop``: the innermost application frame that stays the
same across the executions; records before it have only ``frame``, where the statement ran)."""

from __future__ import annotations

from typing import Any

from memprof.analysis.aggregates import Refs
from memprof.analysis.engine import Engine

_REPEATS = """SELECT file_id, line, route, mp_text(x.sql) AS sql, x.count AS count, coalesce(x.lazy, false) AS lazy,
        coalesce(x.n_plus_one, false) OR flagged_only AS n1, coalesce(mp_text(x.loop), mp_text(x.frame), '(unknown)') AS site,
        x.loop IS NOT NULL AS is_loop, mp_text(x.library) AS library, mp_text(x.frame) AS frame,
        coalesce(x.heap_delta_max, x.rss_delta_max, 0) AS delta, shared
    FROM (SELECT file_id, line, route, shared, unnest(statements) AS x, false AS flagged_only FROM s
          WHERE statements IS NOT NULL
          UNION ALL SELECT file_id, line, route, shared, unnest(flagged), true FROM s WHERE flagged IS NOT NULL)"""


def n_plus_one_sites(e: Engine, refs: Refs, min_executions: int) -> list[dict[str, Any]]:
    """Per code site: the statements it repeated (``min_executions`` times or more in one request, or flagged
    by the integration), with the most per request, lazy or not; the requests affected, executions per
    affected request (max and median), every route, the library frame, and records."""
    e.sql(
        f"""CREATE OR REPLACE TEMP TABLE rep AS
        SELECT file_id, line, route, sql, site, any_value(is_loop) AS is_loop, any_value(library) AS library,
               any_value(frame) AS frame, max(count) AS count, bool_or(lazy) AS lazy, max(delta) AS delta,
               bool_or(shared) AS shared
        FROM ({_REPEATS})
        WHERE n1 OR count >= {int(min_executions)}
        GROUP BY file_id, line, route, sql, site"""
    )
    # a site is an N+1 when it repeats a SELECT; the writes it repeats beside it are listed with it
    e.sql("""DELETE FROM rep WHERE site NOT IN (
        SELECT site FROM rep WHERE regexp_matches(sql, '^\\s*(SELECT|WITH)', 'i'))""")
    sites = e.dicts(
        """SELECT coalesce(site, '(unknown)') AS site, bool_or(is_loop) AS is_loop,
            mode(library) AS library, count(DISTINCT (file_id, line)) AS requests,
            count(DISTINCT (file_id, line)) FILTER (shared) AS shared_requests
        FROM rep GROUP BY 1"""
    )
    per_request = {
        r[0]: (int(r[1]), int(r[2]), int(r[3] or 0))
        for r in e.rows(
            """SELECT site, max(n), quantile_disc(n, 0.5), sum(d) FROM (
                SELECT coalesce(site, '(unknown)') AS site, file_id, line, sum(count) AS n, max(delta) AS d
                FROM rep GROUP BY ALL) GROUP BY site"""
        )
    }
    statements: dict[str, list[dict[str, Any]]] = {}
    for site, sql, n, lazy, frame in e.rows(
        """SELECT coalesce(site, '(unknown)'), sql, max(count), bool_or(lazy), mode(frame)
           FROM rep GROUP BY ALL ORDER BY 1, 3 DESC, 2"""
    ):
        statements.setdefault(site, []).append(
            {"sql": sql, "max_per_request": int(n), "lazy": bool(lazy), "frame": frame}
        )
    routes: dict[str, list[str]] = {}
    for site, route in e.rows(
        """SELECT coalesce(site, '(unknown)'), route FROM rep GROUP BY ALL
           ORDER BY 1, count(DISTINCT (file_id, line)) DESC, 2"""
    ):
        routes.setdefault(site, []).append(route)
    at: dict[str, list[str]] = {}
    for site, f, ln in e.rows(
        """SELECT coalesce(site, '(unknown)'), file_id, line FROM rep GROUP BY ALL
           ORDER BY 1, max(count) DESC, 2, 3"""
    ):
        lst = at.setdefault(site, [])
        if len(lst) < 5:
            lst.append(str(refs(f, ln)))
    e.sql("DROP TABLE rep")
    out = []
    for r in sites:
        site = r["site"]
        most, median, delta = per_request.get(site, (0, 0, 0))
        out.append({**r, "max_per_request": most, "median_per_request": median, "delta": delta,
                    "statements": statements.get(site, []), "routes": routes.get(site, []),
                    "refs": at.get(site, [])})  # fmt: skip
    return sorted(out, key=lambda x: (-x["requests"] * x["max_per_request"], x["site"]))

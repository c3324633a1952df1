"""The self-contained HTML report: one file, inline CSS, JS and SVG, no network needed to view it.

The charts' data is aggregated here, in SQL, to a size a browser draws at once whatever the fleet:
at most ``points`` points per worker line (each bucket's highest, so peaks stay), lines for at most
:data:`MAX_LINES` workers, and past that a band (lowest, median and highest worker per time bucket) with
the workers that peaked highest drawn over it. The page embeds the summary and that data as JSON and
draws with plain JavaScript (loops, never a spread of a large array into a call); when done it sets
``data-state="drawn"`` and ``data-charts`` on ``#memprof-status`` (``data-errors`` counts JavaScript
errors), which the browser test checks.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from importlib import resources
from typing import Any

from memprof.analysis.engine import Engine
from memprof.analysis.filters import Filters
from memprof.analysis.render_json import dumps
from memprof.analysis.sources import Progress, discover
from memprof.analysis.thresholds import Thresholds

MAX_LINES = 12
TOP_LINES = 5
BAND_POINTS = 400


def charts(e: Engine, points: int = 800) -> dict[str, Any]:
    """Chart data from the filtered samples (view ``s``): worker lines, the band, the y range of the data."""
    workers = int(e.value("SELECT count(DISTINCT worker) FROM s") or 0)
    shown = [w for (w,) in e.rows(
        f"SELECT worker FROM s GROUP BY worker ORDER BY max(rss_end) DESC, worker LIMIT {MAX_LINES if workers <= MAX_LINES else TOP_LINES}"
    )]  # fmt: skip
    series: dict[str, list[list[float]]] = {}
    if shown:
        e.sql("CREATE OR REPLACE TEMP TABLE shown (worker VARCHAR)")
        e.con.executemany("INSERT INTO shown VALUES (?)", [(w,) for w in shown])
        for worker, ts, ys in e.rows(
            f"""WITH o AS (SELECT worker, time, rss_end, row_number() OVER (PARTITION BY worker ORDER BY time, file_id, line) - 1 AS k,
                                 count(*) OVER (PARTITION BY worker) AS n FROM s WHERE worker IN (SELECT worker FROM shown)),
                 b AS (SELECT worker, k * {points} // n AS bucket, arg_max(time, (rss_end, -k)) AS t, max(rss_end) AS y
                       FROM o GROUP BY worker, bucket)
            SELECT worker, list(t ORDER BY bucket), list(y ORDER BY bucket) FROM b GROUP BY worker ORDER BY worker"""
        ):
            series[worker] = [[t, float(y)] for t, y in zip(ts, ys, strict=True)]
    band = None
    if workers > MAX_LINES:
        # buckets wide enough for most workers to have a few samples in each: a steady band, not a comb
        per_worker = int(
            e.value("SELECT quantile_disc(n, 0.5) FROM (SELECT count(*) AS n FROM s GROUP BY worker)")
        )
        n = max(10, min(BAND_POINTS, per_worker // 3))
        rows = e.rows(
            f"""WITH w AS (SELECT min(time) AS t0, greatest(max(time) - min(time), 1e-9) AS span FROM s),
                 b AS (SELECT worker, least(floor((time - w.t0) / w.span * {n}), {n - 1}) AS bucket,
                              max(rss_end) AS y FROM s, w GROUP BY ALL)
            SELECT bucket, any_value(w.t0 + (bucket + 0.5) * w.span / {n}) AS t, min(y), quantile_cont(y, 0.5),
                   max(y), count(*) FROM b, w GROUP BY bucket ORDER BY bucket"""
        )
        band = {"t": [r[1] for r in rows], "min": [float(r[2]) for r in rows], "p50": [float(r[3]) for r in rows],
                "max": [float(r[4]) for r in rows], "workers": [r[5] for r in rows]}  # fmt: skip
    lo, hi = e.one("SELECT min(rss_end) AS lo, max(rss_end) AS hi FROM s").values()
    return {"workers": workers, "series": series, "band": band, "y_min": lo, "y_max": hi}


def report_data(
    inputs: Iterable[str], filters: Filters | None = None, *, thresholds: Thresholds | None = None,
    points: int = 800, progress: Progress | None = None, threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The summary and chart data of ``inputs`` (one read of the records)."""
    from memprof.analysis.analyze import read, summarize

    inputs = list(inputs)
    with Engine(threads=threads) as e:
        report = read(e, discover(inputs), inputs, progress)
        paths = [str(p) for (p,) in e.rows("SELECT path FROM files ORDER BY file_id")]
        summary = summarize(e, report, paths, filters, thresholds, progress)
        return summary, charts(e, points)


def render(summary: dict[str, Any], chart_data: dict[str, Any], *, title: str = "memprof report") -> str:
    """The report page for ``summary`` and the chart data of :func:`charts`."""
    template = resources.files("memprof.analysis").joinpath("report_template.html").read_text("utf-8")
    payload = dumps({"summary": summary, "charts": chart_data})
    # JSON inside <script>: "</" would end the element early; "\u003c" keeps the data intact.
    data = payload.replace("<", "\\u003c")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)

"""The self-contained HTML report: one file, inline CSS, JS and SVG, no network needed to view it.

The page embeds the summary and the per-worker memory series as JSON and draws the charts with a few
lines of plain JavaScript; when done it sets ``data-state="drawn"`` and ``data-charts`` on
``#memprof-status`` (``data-errors`` counts JavaScript errors), which the browser test checks.
"""

from __future__ import annotations

import html
from importlib import resources
from typing import Any

from memprof.analysis.render_json import dumps


def render(
    summary: dict[str, Any], series: dict[str, list[tuple[float, float]]], *, title: str = "memprof report"
) -> str:
    """The report page for ``summary`` and the memory ``series`` (worker -> [(time, rss)])."""
    template = resources.files("memprof.analysis").joinpath("report_template.html").read_text("utf-8")
    payload = dumps({"summary": summary, "series": series})
    # JSON inside <script>: "</" would end the element early; "\u003c" keeps the data intact.
    data = payload.replace("<", "\\u003c")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)

"""The analyzer: records read into DuckDB tables (:mod:`memprof.analysis.tables`), statistics and the
aggregates findings need in SQL, the findings as pure functions over those aggregates.

Rendering lives in :mod:`memprof.analysis.render_text`, :mod:`memprof.analysis.render_json` and
:mod:`memprof.analysis.report_html`; the commands in :mod:`memprof.commands` only wire them together.
"""

from memprof.analysis.analyze import Analysis, analyze, summarize
from memprof.analysis.filters import Filters, parse_time
from memprof.analysis.sources import InputError, LoadReport, discover
from memprof.analysis.thresholds import Thresholds

__all__ = [
    "Analysis",
    "Filters",
    "InputError",
    "LoadReport",
    "Thresholds",
    "analyze",
    "discover",
    "parse_time",
    "summarize",
]

"""The analyzer: pure functions over memprof records (loading, statistics, findings, compare).

Rendering lives in :mod:`memprof.analysis.render_text`, :mod:`memprof.analysis.render_json` and
:mod:`memprof.analysis.report_html`; the commands in :mod:`memprof.commands` only wire them together.
"""

from memprof.analysis.analyze import Analysis, analyze, collect, summarize
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
    "collect",
    "discover",
    "parse_time",
    "summarize",
]

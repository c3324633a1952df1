"""The analyzer's entry points: read inputs into a Collector, then build the summary (with findings).

result = analyze(["./memprof-data"], Filters(route="/admin/*"))
result.summary["findings"]          # plain data, the documented JSON shape (docs/analyzer.md)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from memprof.analysis.collect import Collector
from memprof.analysis.filters import Filters
from memprof.analysis.findings import detect
from memprof.analysis.flight_files import dead_worker_crashes
from memprof.analysis.parallel import collect_parallel
from memprof.analysis.sources import InputError, LoadReport, Progress, Source, discover
from memprof.analysis.summary import (
    cache_rows,
    dumps_section,
    high_threshold,
    memory_stats,
    phase_rows,
    route_rows,
    session_section,
    sql_outside_section,
    sql_section,
    worker_rows,
)
from memprof.analysis.thresholds import Thresholds

SUMMARY_FORMAT = "memprof.analysis"
SUMMARY_VERSION = "1.0"


@dataclass
class Analysis:
    """The summary (plain data) plus what it was computed from, for views that need more."""

    summary: dict[str, Any]
    collector: Collector
    report: LoadReport


# Stream every record of the sources into a Collector, on several cores for large inputs.
collect = collect_parallel


def summarize(c: Collector, report: LoadReport, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The summary of collected records: statistics, breakdowns and findings."""
    threshold = high_threshold(c)
    sessions = session_section(c)
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "input": report.to_dict(),
        "filters": c.filters.to_dict(),
        "samples": c.samples,
        "filtered_out": c.filtered_out + c.events.filtered_out,
        "window": dict(zip(("start", "end"), c.window(), strict=True)),
        "limit": c.limit(),
        "memory": memory_stats(c),
        "high_memory": {
            "metric": "growth",
            "threshold": threshold,
            "top": [
                {"ref": ref, "route": route, "worker": worker, "time": t, "growth": g}
                for g, _s, ref, route, worker, t in c.high_samples()[:10]
            ],
        },
        "routes": route_rows(c, threshold),
        "phases": phase_rows(c, threshold),
        "workers": worker_rows(c),
        "sessions": sessions,
        "sql": sql_section(c),
        "dumps": dumps_section(c),
        "crashes": sorted(c.events.crashes, key=lambda x: (x["last_seen"] or 0, x["ref"])),
        "caches": cache_rows(c),
        "sql_outside_requests": sql_outside_section(c),
        "findings": detect(c, threshold, sessions, thresholds),
    }


def analyze(
    inputs: Iterable[str],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    jobs: int | None = None,
) -> Analysis:
    """Read ``inputs`` (data dirs, files, ``-``) and analyse them. Raises InputError when there is nothing to read.

    ``jobs``: processes reading files at once (None: one per core, up to 4, for inputs over 32 MB).
    """
    inputs = list(inputs)
    return analyze_sources(
        discover(inputs), inputs, filters, recent=recent, progress=progress, thresholds=thresholds, jobs=jobs
    )


def analyze_sources(
    sources: list[Source],
    inputs: list[str],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    jobs: int | None = None,
) -> Analysis:
    """Like :func:`analyze` for already discovered sources (so a caller can size a progress bar)."""
    collector, report = collect(sources, filters, recent=recent, progress=progress, jobs=jobs)
    report.paths = inputs
    for record, ref in dead_worker_crashes(inputs):  # killed workers not yet turned into crash records
        collector.events.add_crash(record, ref)
        report.records["memprof.crash"] += 1
    if not sum(report.records.values()):
        where = ", ".join("standard input" if i == "-" else i for i in inputs)
        why = f" ({report.skipped} unreadable lines or files skipped)" if report.skipped else ""
        raise InputError(f"{where} holds no readable memprof records{why}")
    return Analysis(summarize(collector, report, thresholds), collector, report)


__all__ = [
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "Analysis",
    "InputError",
    "analyze",
    "analyze_sources",
    "collect",
    "summarize",
]

"""The analyzer's entry points: read inputs into DuckDB tables, then build the summary (with findings).

result = analyze(["./memprof-data"], Filters(route="/admin/*"))
result.summary["findings"]          # plain data, the documented JSON shape (docs/analyzer.md)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memprof import __version__
from memprof.analysis import views
from memprof.analysis.engine import Engine
from memprof.analysis.filters import Filters
from memprof.analysis.findings import detect
from memprof.analysis.findings_memory import is_library_cache
from memprof.analysis.flight_files import dead_worker_crashes
from memprof.analysis.ingest import Reader
from memprof.analysis.recent import recent_records
from memprof.analysis.sources import InputError, LoadReport, Progress, Source, discover
from memprof.analysis.summary import build
from memprof.analysis.thresholds import Thresholds

SUMMARY_FORMAT = "memprof.analysis"
SUMMARY_VERSION = "1.0"


@dataclass
class Analysis:
    """The summary (plain data), what it was read from, and the most recent samples when asked."""

    summary: dict[str, Any]
    report: LoadReport
    recent: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    memory_raised_to: int | None = None
    """Bytes the engine raised its memory limit to for a statement that ran out of it (None: it never did)."""

    def recent_records(self) -> list[tuple[dict[str, Any], str]]:
        """The most recent samples kept for ``--recent``, newest first, with their references."""
        return self.recent


def analyze(
    inputs: Iterable[str],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    threads: int | None = None,
    show_all: bool = False,
) -> Analysis:
    """Read ``inputs`` (data dirs, files, Parquet exports, ``-``) and analyse them (``show_all``: library
    caches too). Raises InputError when there is nothing to read."""
    inputs = list(inputs)
    return analyze_sources(discover(inputs), inputs, filters, recent=recent, progress=progress,
                           thresholds=thresholds, threads=threads, show_all=show_all)  # fmt: skip


def read(e: Engine, sources: list[Source], inputs: list[str], progress: Progress | None = None) -> LoadReport:
    """Read ``sources`` into ``e``'s tables (with the crash records of dead workers' flight files)."""
    report = LoadReport(paths=list(inputs))
    total = sum(s.size for s in sources) or 1
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("reading", min(done[0], total), total)

    reader = Reader(e, report, tick)
    for record, path in dead_worker_crashes(inputs, reader.bad_worker_file):
        reader.add_crash(record, path)
    reader.read(sources)
    if not sum(report.records.values()):
        where = ", ".join("standard input" if i == "-" else i for i in inputs)
        why = f" ({report.skipped} unreadable lines or files skipped)" if report.skipped else ""
        raise InputError(f"{where} holds no readable memprof records{why}")
    return report


def summarize(
    e: Engine, report: LoadReport, paths: list[str], filters: Filters | None = None,
    thresholds: Thresholds | None = None, progress: Progress | None = None, show_all: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The summary of what ``e``'s tables hold: statistics, breakdowns and findings."""
    filters = filters or Filters()
    t = thresholds or Thresholds()
    if progress is not None:
        progress("computing", 0, 2)
    views.create_views(e, filters)

    def refs(file_id: int | None, line: int | None) -> str | None:
        if file_id is None:
            return None
        return f"{paths[file_id]}:{line}" if line else paths[file_id]

    sections, facts = build(e, refs, t.leak_min_samples, t.variance_min_samples, t.n_plus_one)
    if progress is not None:
        progress("computing", 1, 2)
    findings = detect(facts, t, show_all=show_all)
    if not show_all:  # the app's own caches and frames only
        sections["caches"] = [c for c in sections["caches"] if not is_library_cache(c["name"], c["kind"])]
        sections["dumps"]["frames"] = [f for f in sections["dumps"]["frames"] if not f["library"]]
    if progress is not None:
        progress("computing", 2, 2)
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "memprof_version": __version__,
        "thresholds": t.to_dict(),
        "input": report.to_dict(),
        "filters": filters.to_dict(),
        "filtered_out": views.filtered_out(e),
        **sections,
        "findings": findings,
    }


def analyze_sources(
    sources: list[Source],
    inputs: list[str],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    threads: int | None = None,
    show_all: bool = False,
) -> Analysis:
    """Like :func:`analyze` for already discovered sources."""
    with Engine(threads=threads) as e:
        report = read(e, sources, inputs, progress)
        paths = [str(p) for (p,) in e.rows("SELECT path FROM files ORDER BY file_id")]
        summary = summarize(e, report, paths, filters, thresholds, progress, show_all)
        latest = recent_records(e, paths, recent) if recent else []
    return Analysis(summary, report, latest, e.raised_to)


__all__ = [
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "Analysis",
    "InputError",
    "analyze",
    "analyze_sources",
    "summarize",
]

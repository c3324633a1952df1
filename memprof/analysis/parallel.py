"""Reading many files on several cores: contiguous shards of the file list, one process each, merged in
order (so the result is the same as one sequential pass; see :mod:`memprof.analysis.merge`).

Only for inputs large enough to pay for a process (32 MB by default) and only where ``fork`` exists;
a shard whose process fails is read again in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

from memprof.analysis.collect import Collector, collect_sources
from memprof.analysis.filters import Filters
from memprof.analysis.merge import merge_collectors, merge_reports
from memprof.analysis.sources import LoadReport, Progress, Source

MIN_PARALLEL_BYTES = 32 * 1024 * 1024
MAX_JOBS = 4


def default_jobs(sources: list[Source]) -> int:
    """One process per core (at most 4) for large file inputs; 1 otherwise."""
    if any(s.path == "-" for s in sources) or sum(s.size for s in sources) < MIN_PARALLEL_BYTES:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_JOBS))


def shards(sources: list[Source], n: int) -> list[list[Source]]:
    """``sources`` cut into at most ``n`` contiguous runs of about equal size."""
    total = sum(s.size for s in sources) or 1
    out: list[list[Source]] = [[]]
    done = 0
    for s in sources:
        if out[-1] and done >= total * len(out) / n and len(out) < n:
            out.append([])
        out[-1].append(s)
        done += s.size
    return out


def _read(
    sources: list[Source], files: list[str], filters: Filters | None, recent: int
) -> tuple[Collector, LoadReport]:
    return collect_sources(sources, filters, recent=recent, files=files)


def collect_parallel(
    sources: list[Source],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> tuple[Collector, LoadReport]:
    """Like :func:`collect_sources`, with ``jobs`` processes (None: :func:`default_jobs`)."""
    n = default_jobs(sources) if jobs is None else max(1, jobs)
    parts = shards(sources, n) if n > 1 and not any(s.path == "-" for s in sources) else [sources]
    files = [s.path for s in sources]
    if len(parts) < 2:
        return collect_sources(sources, filters, recent=recent, progress=progress, files=files)
    pool = ProcessPoolExecutor(max_workers=len(parts) - 1, mp_context=multiprocessing.get_context("fork"))
    try:
        futures: list[Future[tuple[Collector, LoadReport]]] = [
            pool.submit(_read, part, files, filters, recent) for part in parts[1:]
        ]
        collector, report = collect_sources(parts[0], filters, recent=recent, progress=progress, files=files)
        for part, future in zip(parts[1:], futures, strict=True):
            try:
                other, other_report = future.result()
            except Exception:  # a dead or failing worker: read its shard here
                other, other_report = _read(part, files, filters, recent)
            merge_collectors(collector, other)
            merge_reports(report, other_report)
            if progress is not None:
                progress(sum(s.size for s in part))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return collector, report

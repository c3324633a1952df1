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
SHARD_BYTES = 64 * 1024 * 1024


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
    """Like :func:`collect_sources`, with ``jobs`` processes (None: :func:`default_jobs`).

    The files are cut into shards of about 64 MB (at least two per process), read by the processes
    and merged here in file order as they come back, so that no process ever holds more than the merged
    result plus one shard's.
    """
    n = default_jobs(sources) if jobs is None else max(1, jobs)
    files = [s.path for s in sources]
    if n < 2 or len(sources) < 2 or any(s.path == "-" for s in sources):
        return collect_sources(sources, filters, recent=recent, progress=progress, files=files)
    total = sum(s.size for s in sources)
    parts = shards(sources, max(2 * n, -(-total // SHARD_BYTES)))
    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
    merged: tuple[Collector, LoadReport] | None = None
    try:
        futures: list[Future[tuple[Collector, LoadReport]] | None] = [
            pool.submit(_read, part, files, filters, recent) for part in parts
        ]
        for i, part in enumerate(parts):
            future = futures[i]
            futures[i] = None  # the merged result is the only copy kept
            try:
                assert future is not None
                result = future.result()
            except Exception:  # a dead or failing worker: read its shard here
                result = _read(part, files, filters, recent)
            if merged is None:
                merged = result
            else:
                merge_collectors(merged[0], result[0])
                merge_reports(merged[1], result[1])
            del result
            _trim_heap()
            if progress is not None:
                progress(sum(s.size for s in part))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    assert merged is not None
    _trim_heap()
    return merged


def _trim_heap() -> None:
    """Give the memory freed while merging back to the system (glibc keeps it in per-thread arenas:
    the shards' results were received on the pool's thread)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

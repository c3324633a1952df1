"""Rows and memory of a statement's result: a fetch strategy that counts rows as they are fetched.

SQLite's ``cursor.rowcount`` is -1 for a SELECT, so rows are counted as they come back, by a strategy
that delegates every call to the one SQLAlchemy would have used. When the result is used up or closed,
RSS and heap are read: the statement's growth over its execution and fetch.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import cursor as _cursor

from memprof.heap import heap_at
from memprof.integrations.sqlalchemy._collectors import QueryCollector, StatementStat
from memprof.memory import rss_at
from memprof.profile import RequestProfile
from memprof.safety.isolation import internal_error

_perf = time.perf_counter_ns


def record_memory(
    profile: RequestProfile,
    queries: QueryCollector,
    stat: StatementStat,
    rss_before: int,
    heap_before: int,
    now: int,
) -> None:
    """A statement's end (rows fetched): RSS and heap now, and its growth over this execution."""
    rss = rss_at(now)
    stat.rss_after = queries.last_rss = rss
    if rss - rss_before > stat.rss_delta_max:
        stat.rss_delta_max = rss - rss_before
    heap = heap_at(now)
    stat.heap_after = heap
    if heap - heap_before > stat.heap_delta_max:
        stat.heap_delta_max = heap - heap_before
    if heap > profile.heap_peak:
        profile.heap_peak = heap


def count_rows(
    profile: RequestProfile,
    queries: QueryCollector,
    stat: StatementStat,
    rss_before: int,
    heap_before: int,
    context: Any,
) -> bool:
    """Install a counting fetch strategy where SQLAlchemy would use its default one."""
    if getattr(context, "cursor_fetch_strategy", None) is not _cursor._DEFAULT_FETCH:
        return False  # a dialect's own strategy: left alone, rows not counted
    if context.is_crud or context.is_text:
        streamed = context._is_server_side
    else:
        streamed = context._is_server_side or context.execution_options.get("stream_results", False)
    inner: Any = _cursor._DEFAULT_FETCH
    if streamed:
        inner = _cursor.BufferedRowCursorFetchStrategy(context.cursor, context.execution_options)
    context.cursor_fetch_strategy = CountingFetch(inner, profile, queries, stat, rss_before, heap_before)
    return True


class CountingFetch(_cursor.CursorFetchStrategy):
    """Delegates to SQLAlchemy's fetch strategy; counts rows and reads RSS and heap when the result is
    used up."""

    __slots__ = ("_done", "_heap", "_inner", "_profile", "_queries", "_rss", "_stat")

    def __init__(
        self,
        inner: Any,
        profile: RequestProfile,
        queries: QueryCollector,
        stat: StatementStat,
        rss: int,
        heap: int,
    ) -> None:
        self._inner = inner
        self._profile = profile
        self._queries = queries
        self._stat = stat
        self._rss = rss
        self._heap = heap
        self._done = False

    @property
    def alternate_cursor_description(self) -> Any:  # type: ignore[override]
        return self._inner.alternate_cursor_description

    def soft_close(self, result: Any, dbapi_cursor: Any) -> None:
        self._inner.soft_close(result, dbapi_cursor)
        self._closed()

    def hard_close(self, result: Any, dbapi_cursor: Any) -> None:
        self._inner.hard_close(result, dbapi_cursor)
        self._closed()

    def handle_exception(self, result: Any, dbapi_cursor: Any, err: BaseException) -> Any:
        return self._inner.handle_exception(result, dbapi_cursor, err)

    def yield_per(self, result: Any, dbapi_cursor: Any, num: int) -> None:
        self._inner.yield_per(result, dbapi_cursor, num)
        replaced = result.cursor_strategy
        if replaced is not self:  # the default strategy swaps in a buffered one: keep counting it
            self._inner = replaced
            result.cursor_strategy = self

    def fetchone(self, result: Any, dbapi_cursor: Any, hard_close: bool = False) -> Any:
        row = self._inner.fetchone(result, dbapi_cursor, hard_close)
        if row is not None:
            self._fetched(1)
        return row

    def fetchmany(self, result: Any, dbapi_cursor: Any, size: int | None = None) -> Any:
        rows = self._inner.fetchmany(result, dbapi_cursor, size)
        if rows:
            self._fetched(len(rows))
        return rows

    def fetchall(self, result: Any, dbapi_cursor: Any) -> Any:
        rows = self._inner.fetchall(result, dbapi_cursor)
        if rows:
            self._fetched(len(rows))
        return rows

    def _fetched(self, n: int) -> None:
        try:
            if not self._profile.finished:
                self._stat.rows += n
                self._queries.current = self._stat
        except Exception as exc:
            internal_error("sqlalchemy.fetch", exc)

    def _closed(self) -> None:
        """The result is used up or closed (every path ends here): RSS and heap after the statement."""
        try:
            profile = self._profile
            if self._done or profile.finished:
                return
            self._done = True
            t0 = _perf()
            record_memory(profile, self._queries, self._stat, self._rss, self._heap, t0)
            profile.overhead_ns += _perf() - t0
        except Exception as exc:
            internal_error("sqlalchemy.fetch", exc)

"""The analyzer's engine: one DuckDB connection per analysis, with bounded memory and the helper macros
every query of :mod:`memprof.analysis` uses.

DuckDB is an analyzer-side dependency: only :mod:`memprof.analysis` and :mod:`memprof.commands` import
it, never the middleware or anything on a worker's request path.

Tables live in a compressed in-memory database (``COMPRESS``); after each chunk of input is inserted, a
``CHECKPOINT`` compresses it, so a million samples take tens of MB. Past ``memory_limit`` DuckDB spills to
a private temporary directory, removed when the engine closes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import duckdb

MEMORY_LIMIT = "200MB"
MAX_RAISES = 3
"""A statement that runs out of the engine's memory runs again with twice the limit, up to this many times
(200 MB -> 1.6 GB), never past half of the machine's memory: an analysis that needs more than its usual
bound is better than a traceback (:attr:`Engine.raised_to` tells)."""
CHECKPOINT_THRESHOLD = "1GB"
MAX_TEXT = 2000
"""Strings from records are cut to this many characters in every table (and so in every output)."""
MAX_NAME = 300
"""... and names (routes, workers, keys, phases) to this many."""

# A record's scalar numbers arrive as the text JSON wrote (``from_json`` into VARCHAR), so that a value of
# the wrong type is seen as such; numbers inside lists arrive as DOUBLE (a wrong type reads as null). Either
# way an integer must be one: DuckDB would round 1.5 to the integer 2.
MACROS = f"""
CREATE OR REPLACE MACRO mp_num(v) AS TRY_CAST(v AS DOUBLE);
CREATE OR REPLACE MACRO mp_bad_num(v) AS
    v IS NOT NULL AND NOT coalesce(isfinite(TRY_CAST(v AS DOUBLE)), false);
CREATE OR REPLACE MACRO mp_bad_int(v) AS
    v IS NOT NULL AND NOT coalesce(isfinite(TRY_CAST(v AS DOUBLE))
        AND TRY_CAST(v AS DOUBLE) = trunc(TRY_CAST(v AS DOUBLE))
        AND abs(TRY_CAST(v AS DOUBLE)) < 9007199254740992, false);
CREATE OR REPLACE MACRO mp_int(v) AS
    CASE WHEN mp_bad_int(v) THEN NULL ELSE TRY_CAST(TRY_CAST(v AS DOUBLE) AS BIGINT) END;
CREATE OR REPLACE MACRO mp_bad_i(d) AS
    d IS NOT NULL AND NOT (isfinite(d) AND d = trunc(d) AND abs(d) < 9007199254740992);
CREATE OR REPLACE MACRO mp_bad_d(d) AS d IS NOT NULL AND NOT isfinite(d);
CREATE OR REPLACE MACRO mp_i(d) AS CASE WHEN mp_bad_i(d) THEN NULL ELSE d::BIGINT END;
CREATE OR REPLACE MACRO mp_cut(s, n) AS
    CASE WHEN strlen(s) > n AND length(s) > n THEN left(s, n - 1) || '…' ELSE s END;
CREATE OR REPLACE MACRO mp_text(s) AS mp_cut(s, {MAX_TEXT});
CREATE OR REPLACE MACRO mp_name(s) AS mp_cut(s, {MAX_NAME});
"""


class EngineMemoryError(RuntimeError):
    """A statement ran out of memory at the highest limit the engine may take."""


class Engine:
    """A DuckDB connection with the analyzer's settings; close it (or use it as a context manager)."""

    def __init__(self, *, threads: int | None = None, memory_limit: str = MEMORY_LIMIT) -> None:
        self.raised_to: int | None = None
        """The memory limit in bytes a statement made the engine raise its own to (None: never raised)."""
        self.tmp = tempfile.mkdtemp(prefix="memprof-analysis-")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.con = duckdb.connect(
            config={
                "threads": threads or max(1, min(cores, 8)),
                "memory_limit": memory_limit,
                "temp_directory": os.path.join(self.tmp, "spill"),
                "preserve_insertion_order": True,
                "autoinstall_known_extensions": False,
            }
        )
        self.con.execute("SET enable_progress_bar = false")  # it would write to standard output
        # Compression happens when the reader says (Engine.checkpoint, once per wave of inserts), never
        # inside an insert: an automatic checkpoint at each commit recompressed the growing table (half of
        # the reading time for a million samples).
        self.con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self.con.execute("ATTACH ':memory:' AS mp (COMPRESS)")
        self.con.execute("USE mp")
        self.con.execute(MACROS)
        self.limit = _bytes(memory_limit)
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        self.max_limit = min(self.limit << MAX_RAISES, max(physical // 2, self.limit))

    def _run(self, query: str, params: Sequence[Any] | None) -> duckdb.DuckDBPyConnection:
        """Execute, raising the memory limit while a statement runs out of it (a statement is atomic: one
        that failed changed nothing)."""
        while True:
            try:
                return self.con.execute(query, params)
            except duckdb.OutOfMemoryException as exc:
                if self.limit * 2 > self.max_limit:
                    raise EngineMemoryError(
                        f"the analysis needs more than {self.limit // 10**6} MB of memory: analyse fewer files "
                        "at once or a shorter time window (--since, --until)"
                    ) from exc
                self.limit *= 2
                self.raised_to = self.limit
                self.con.execute(f"SET memory_limit = '{self.limit}B'")

    def sql(self, query: str, params: Sequence[Any] | None = None) -> None:
        """Run a statement for its effect."""
        self._run(query, params)

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """All rows of a query as tuples."""
        return self._run(query, params).fetchall()

    def dicts(self, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """All rows of a query as dicts (column name -> value)."""
        cur = self._run(query, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def one(self, query: str, params: Sequence[Any] | None = None) -> dict[str, Any]:
        """The first row of a query as a dict (every column None when there is no row)."""
        cur = self._run(query, params)
        names = [d[0] for d in cur.description or ()]
        row = cur.fetchone()
        return dict(zip(names, row if row is not None else [None] * len(names), strict=True))

    def value(self, query: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row (None when there is none)."""
        row = self._run(query, params).fetchone()
        return row[0] if row else None

    def checkpoint(self) -> None:
        """Compress what was inserted since the last checkpoint."""
        self.con.execute("CHECKPOINT mp")

    def close(self) -> None:
        """Close the connection and remove the temporary directory."""
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes(size: str) -> int:
    """A DuckDB memory size in bytes: ``200MB`` (powers of 1000, as DuckDB reads them) or ``200MiB``."""
    text = size.strip().upper()
    for unit, factor in (("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("KB", 10**3), ("MB", 10**6),
                         ("GB", 10**9), ("B", 1)):  # fmt: skip
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"

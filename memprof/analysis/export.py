"""Writing the analyzer's tables as Parquet files (``memprof export DIR --parquet OUT``): one file per
table, ``samples.parquet``, ``states.parquet``, ``dumps.parquet``, ``crashes.parquet`` and
``problems.parquet``, each row with the path of the file it came from (``file``) instead of a file id.

``memprof analyze OUT`` reads them back as it reads a data dir; a warehouse reads them as they are (the
SQL is in docs/analyzer.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from memprof.analysis import tables
from memprof.analysis.analyze import read
from memprof.analysis.engine import Engine, quote
from memprof.analysis.sources import LoadReport, Progress, discover

EXPORTED = ("samples", "states", "dumps", "crashes", "problems")


def export_parquet(
    inputs: Iterable[str], out: Path, *, progress: Progress | None = None, threads: int | None = None
) -> tuple[LoadReport, dict[str, int]]:
    """Read ``inputs`` and write one Parquet file per table into ``out`` (created); returns the load
    report and the rows written per table."""
    inputs = list(inputs)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    with Engine(threads=threads) as e:
        report = read(e, discover(inputs), inputs, progress)
        for table in EXPORTED:
            columns = ", ".join(f"t.{c}" for c in tables.SCHEMA[table] if c != "file_id")
            target = out / f"{table}.parquet"
            tmp = out / f".{table}.parquet.tmp"
            # (rows in the order they were read, not sorted by file and line: sorting 2,000,000 samples
            # doubled the export's time, and a row's file and line are in its columns)
            e.sql(
                f"COPY (SELECT f.path AS file, {columns} FROM {table} t JOIN files f USING (file_id)) "
                f"TO {quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
            )
            os.replace(tmp, target)
            written[table] = int(e.value(f"SELECT count(*) FROM {table}"))
    return report, written

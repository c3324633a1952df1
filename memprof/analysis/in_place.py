"""Samples queried where they lie: when every source of samples is a local Parquet export, the ``samples``
table becomes a view over those files instead of a copy (copying 2,000,000 exported samples into the
engine took about as long as every statistic over them; read in place, the whole analysis takes about
what the statistics take). Object storage is copied once instead: every statistic would fetch it again.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from memprof.analysis import tables as t
from memprof.analysis.engine import Engine, quote
from memprof.analysis.sources import URL_SCHEMES, Source

NewFileId = Callable[[str, str], int]


def samples_in_place(e: Engine, sources: list[Source], file_id: NewFileId) -> list[Source]:
    """Make ``samples`` a view over the Parquet sources of samples when every source is an export or a
    document and the exports of samples are local files that read; returns the sources it took ([] when
    it took none: they are read the usual way, and a bad one reported there). ``file_id(path, kind)``
    gives each file of the exports its id, in the order a copy would."""
    wanted = [s for s in sources if s.table == "samples" and s.problem is None]
    if not wanted or any(s.kind not in ("parquet", "document") for s in sources):
        return []  # lines of any kind (a log, a state file read line by line) may add samples rows
    if any(s.path.startswith(URL_SCHEMES) for s in wanted):
        return []
    src = f"read_parquet([{', '.join(quote(s.path) for s in wanted)}], union_by_name=true, filename=true)"
    counts = ", ".join(f'count(p."{c}")' for c in t.SCHEMA["samples"] if c != "file_id")
    try:
        files: dict[str, list[str]] = {}
        for filename, file in e.rows(f"SELECT DISTINCT filename, file FROM {src} ORDER BY file"):
            files.setdefault(str(filename), []).append(str(file))
        e.rows(f"SELECT count(*), {counts} FROM {src} p")  # every column read once: a corrupt one raises here
    # a corrupt file (DuckDB 1.4 raises some as a RuntimeError), another schema: read the usual way, where
    # the file is reported
    except (duckdb.Error, RuntimeError):
        return []
    if set(files) - {s.path for s in wanted}:  # named otherwise than given: copy them instead
        return []
    e.sql("CREATE TABLE exported_files (filename VARCHAR, file VARCHAR, file_id INTEGER)")
    for source in wanted:
        for file in files.get(source.path, []):
            e.sql(
                "INSERT INTO exported_files VALUES (?, ?, ?)", [source.path, file, file_id(file, "exported")]
            )
    columns = ", ".join(
        "m.file_id AS file_id" if c == "file_id" else f'p."{c}"::{typ} AS "{c}"'
        for c, typ in t.SCHEMA["samples"].items()
    )
    e.sql("DROP TABLE samples")
    e.sql(
        f"CREATE VIEW samples AS SELECT {columns} FROM {src} p JOIN exported_files m USING (filename, file)"
    )
    return wanted

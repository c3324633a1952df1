"""The statements that read JSON Lines files into the analyzer's tables (:mod:`memprof.analysis.ingest`
runs them): DuckDB's JSON reader for clean files, the text reader with ``from_json`` for the rest; and
the small helpers around them (line counts, running one statement alone)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from memprof.analysis import tables as t
from memprof.analysis.engine import quote
from memprof.analysis.sources import SAMPLE, STATE
from memprof.records.versions import VERSIONS

MAX_SQL_LINE = 1024 * 1024  # longer lines make DuckDB refuse the file: it is read in Python then
_SEP = "chr(31)"
_PARSE = {"samples": (SAMPLE, t.SAMPLE_JSON, t.SAMPLE_BAD, t.SAMPLE_ROW),
          "states": (STATE, t.STATE_JSON, t.STATE_BAD, t.STATE_ROW)}  # fmt: skip
_COLUMNS = {"samples": t.SAMPLE_COLUMNS, "states": t.STATE_COLUMNS}
# What bad input makes DuckDB raise (a corrupt .gz, invalid UTF-8, a line past the size limit); any other
# error (a binder error: a bug) propagates.
DATA_ERRORS = (
    duckdb.IOException,
    duckdb.InvalidInputException,
    duckdb.NotImplementedException,
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.OutOfMemoryException,
)


def _scan(file_id: int, path: str) -> str:
    return (
        f"SELECT {file_id} AS file_id, ordinality::INTEGER AS line, text FROM read_csv({quote(path)}, "
        "columns={'text': 'VARCHAR'}, delim='\x01', quote='', escape='', header=false, auto_detect=false, "
        f"max_line_size={MAX_SQL_LINE}, buffer_size={2 * MAX_SQL_LINE}) WITH ORDINALITY"
    )


def insert_lines(table: str, files: list[tuple[int, str]]) -> str:
    """The statement reading JSON Lines ``files`` (``(file_id, path)``) into ``table``, problems included
    (column ``problem``: blank lines too, to count lines).

    Numbering lines (``WITH ORDINALITY``) keeps one statement on one core: :class:`Reader` runs one
    statement per core at once instead."""
    _tag, structure, _bad, row = _PARSE[table]
    detail = (
        f"CASE WHEN j IS NOT NULL AND {t.DETAIL_GATE} THEN TRY(from_json(text, {quote(t.DETAIL_JSON)})) END"
        if table == "samples"
        else "NULL"
    )
    scans = "\nUNION ALL ".join(_scan(fid, path) for fid, path in files)
    problem = _problem(
        table,
        """
        WHEN text IS NULL OR trim(text) = '' THEN 'blank'
        WHEN j IS NULL THEN 'invalid JSON'
        WHEN j.schema IS NULL AND json_type(text) <> 'OBJECT' THEN 'not a JSON object'""",
    )
    return f"""INSERT INTO {table} BY NAME
    SELECT file_id, line, {row}, {problem} AS problem
    FROM (SELECT file_id, line, text, j, {detail} AS d
          FROM (SELECT file_id, line, text, TRY(from_json(text, {quote(structure)})) AS j FROM ({scans})))"""


def _problem(table: str, invalid_json: str) -> str:
    tag, _structure, bad, _row = _PARSE[table]
    major = VERSIONS[tag].split(".")[0]
    return f"""CASE {invalid_json}
        WHEN j.schema IS NULL THEN 'not a memprof record: no schema tag'
        WHEN j.schema <> '{tag}' OR coalesce(split_part(j.version, '.', 1), '') <> '{major}'
            THEN 'unsupported' || {_SEP} || left(j.schema, 100) || {_SEP} || left(coalesce(j.version, ''), 100)
        ELSE 'invalid record' || {_SEP} || ({bad})
    END"""


# A reference to the details ``d`` in a row expression (see insert_json).
_DETAILS_IN_J = re.compile(r"(?<![\w.])d\.")


def insert_json(table: str, files: list[tuple[int, str, int]]) -> str:
    """The fast statement for files (``(file_id, path, lines)``) whose every line is a JSON object with
    fields of the expected JSON types: DuckDB's own JSON reader, one scan over every file (one plan,
    whatever their number), raising on anything else (the file is read by :func:`insert_lines` then).
    Rows are numbered across the files in order; a file's line is that number less the lines of the files
    before it, so :class:`~memprof.analysis.ingest.Reader` checks each file's first and last line and
    count (a blank line, skipped unnumbered, shows there)."""
    columns = _COLUMNS[table]
    spec = "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in columns.items()) + "}"
    paths = "[" + ", ".join(quote(path) for _fid, path, _n in files) + "]"
    offsets, before = [], 0
    for fid, path, n in files:
        offsets.append(f"({quote(path)}, {fid}, {before})")
        before += n
    # The scan itself is ``j`` (and the details ``d`` are in it): fields are read in place, never copied
    # into a struct first (which cost a third of the statement).
    row = _DETAILS_IN_J.sub("j.", _PARSE[table][3])
    problem = _DETAILS_IN_J.sub("j.", _problem(table, ""))
    return f"""INSERT INTO {table} BY NAME
    SELECT o.file_id, (j.ordinality - o.before)::INTEGER AS line, {row}, {problem} AS problem
    FROM read_json({paths}, format='newline_delimited', columns={spec}, maximum_object_size={MAX_SQL_LINE},
                   filename=true) WITH ORDINALITY AS j
    JOIN (VALUES {", ".join(offsets)}) o(path, file_id, before) ON j.filename = o.path"""


class Gate:
    """Statements run side by side (shared), or one alone (exclusive: a retry after running out of memory)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.running = 0
        self.closed = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self.cond:
            self.cond.wait_for(lambda: not self.closed)
            self.running += 1
        try:
            yield
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.cond:
            self.cond.wait_for(lambda: not self.closed)
            self.closed = True
            self.cond.wait_for(lambda: self.running == 0)
        try:
            yield
        finally:
            with self.cond:
                self.closed = False
                self.cond.notify_all()


def count_lines(path: str) -> int:
    """Lines of a file (a last line without its newline counts)."""
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return -1
    return n + (last != b"\n")


def ends_with_newline(path: str) -> bool:
    if path.endswith(".gz") or not os.path.isfile(path):
        return True  # cannot tell cheaply: call it invalid rather than truncated
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True

"""Reading sources into the analyzer's tables (:mod:`memprof.analysis.tables`).

JSON Lines data files go straight to DuckDB (:mod:`memprof.analysis.statements`), one statement per core
at once: DuckDB's JSON reader first (its line count checked against the file), else each line as text
parsed with ``from_json``; every record is validated in SQL. A line that is not a valid record becomes a
row of ``problems`` (file, line, reason) and nothing else: a record is counted whole or not at all. A file
DuckDB refuses altogether (a corrupt .gz, a line past its size limit) is sorted out in Python
(:mod:`memprof.analysis.normalize`), as logs and standard input are. Documents (dumps, crash records) are
read in Python (:mod:`memprof.analysis.documents`); Parquet exports with ``read_parquet``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import orjson

from memprof.analysis import tables as t
from memprof.analysis.documents import MAX_DOCUMENT, crash_row, dump_row
from memprof.analysis.engine import Engine, quote
from memprof.analysis.in_place import samples_in_place
from memprof.analysis.normalize import normalize
from memprof.analysis.sources import (
    CRASH,
    DUMP,
    MAX_EXAMPLES,
    SAMPLE,
    STATE,
    LoadReport,
    Problem,
    Source,
    VersionCheck,
    refusal,
)
from memprof.analysis.statements import (
    DATA_ERRORS,
    Gate,
    count_lines,
    ends_with_newline,
    insert_json,
    insert_lines,
)

CHUNK_BYTES = 32 * 1024 * 1024
CHUNK_FILES = 256
# Input read between two compressions of the tables: each CHECKPOINT costs more as the tables grow, so
# fewer is faster; uncompressed rows wait in memory (spilled past the engine's limit) until then.
CHECKPOINT_BYTES = 128 * 1024 * 1024
Tick = Callable[[int], None]


class Reader:
    """Reads sources into an engine's tables; problems and counts go into ``report``."""

    def __init__(self, e: Engine, report: LoadReport, tick: Tick | None = None) -> None:
        self.e, self.report, self.tick = e, report, tick or (lambda n: None)
        self.check = VersionCheck()
        self.paths: list[str] = []
        self.docs: dict[str, list[dict[str, Any]]] = {"dumps": [], "crashes": []}
        self.python_problems: list[tuple[int, int | None, str, str | None]] = []
        self.lock = threading.Lock()
        self.gate = Gate()
        self.in_place = False  # samples: a view over Parquet exports (memprof.analysis.in_place)
        e.sql(t.create_tables())
        for table in ("samples", "states"):
            e.sql(f"ALTER TABLE {table} ADD COLUMN problem VARCHAR")

    def file_id(self, path: str, kind: str) -> int:
        """A new id for ``path`` (its row in ``files``)."""
        self.paths.append(path)
        self.e.sql("INSERT INTO files VALUES (?, ?, ?)", [len(self.paths) - 1, path, kind])
        return len(self.paths) - 1

    def problem(self, file_id: int, line: int | None, message: str) -> None:
        """One skipped line or file, found in Python."""
        reason, _, detail = message.partition(": ")
        self.python_problems.append((file_id, line, reason, detail or None))

    # -- sources -----------------------------------------------------------------------------------
    def read(self, sources: Iterable[Source]) -> None:
        """Read every source (data files in chunks, then logs and streams, then documents)."""
        chunks: dict[str, list[tuple[int, Source]]] = {"samples": [], "states": []}
        sources = list(sources)
        taken = samples_in_place(self.e, sources, self.file_id)
        self.in_place = bool(taken)
        for source in taken:
            self.report.files += 1
            self.tick(source.size)
        for source in (s for s in sources if s not in taken):
            if source.kind == "parquet" and source.problem is None:
                self.report.files += 1
                self._parquet(source)
                self.tick(source.size)
                continue
            fid = self.file_id(source.path, source.table or source.kind)
            if source.problem is not None:
                self.problem(fid, None, source.problem)
                continue
            self.report.files += 1
            if source.kind == "document":
                self._document(fid, source)
                self.tick(source.size)
            elif source.table is not None and not source.stream:
                chunks[source.table].append((fid, source))
            else:
                self._normalized(fid, source)
                self.e.checkpoint()
                self.tick(source.size)
        work = [(table, part) for table, files in chunks.items() for part in _chunks(files)]
        workers = max(1, int(self.e.value("SELECT current_setting('threads')")))
        with ThreadPoolExecutor(workers) as pool:
            pending = 0  # bytes read since the last checkpoint
            for i in range(0, len(work), workers):  # in waves: a checkpoint compresses the waves' rows
                wave = work[i : i + workers]
                list(pool.map(self._lines, wave))
                pending += sum(src.size for _table, part in wave for _fid, src in part)
                if pending >= CHECKPOINT_BYTES or i + workers >= len(work):
                    self.e.checkpoint()
                    pending = 0
        self._insert_documents()
        self._finish()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.e.con.cursor()
        cur.execute("USE mp")
        cur.execute("SET enable_progress_bar = false")
        return cur

    def _lines(self, item: tuple[str, list[tuple[int, Source]]]) -> None:
        """Read a chunk of JSON Lines files: DuckDB's JSON reader first (every line a valid record of the
        expected JSON types, the line count checked), else :func:`insert_lines`, else Python."""
        table, part = item
        cur = self._cursor()
        try:
            plain = [(fid, src) for fid, src in part if not src.path.endswith(".gz")]
            slow = [(fid, src) for fid, src in part if src.path.endswith(".gz")]
            if plain:
                slow += self._fast(cur, table, plain)
            for one in slow:
                self._robust(cur, table, one)
        finally:
            cur.close()
        with self.lock:
            self.tick(sum(s.size for _fid, s in part))

    def _fast(
        self, cur: duckdb.DuckDBPyConnection, table: str, part: list[tuple[int, Source]]
    ) -> list[tuple[int, Source]]:
        """Insert ``part`` with :func:`insert_json`; returns the files it could not read exactly."""
        lines = {fid: count_lines(src.path) for fid, src in part}
        statement = insert_json(table, [(fid, src.path, lines[fid]) for fid, src in part])
        try:
            try:
                with self.gate.shared():
                    cur.execute(statement)
            except duckdb.OutOfMemoryException:  # the others' buffers took the memory: again, alone
                with self.gate.exclusive():
                    cur.execute(statement)
        except DATA_ERRORS:
            if len(part) == 1:
                return part
            half = len(part) // 2  # find the file(s) the JSON reader refuses
            return self._fast(cur, table, part[:half]) + self._fast(cur, table, part[half:])
        ids = ", ".join(str(fid) for fid, _src in part)
        seen = {fid: (n, lo, hi) for fid, n, lo, hi in cur.execute(
            f"SELECT file_id, count(*), min(line), max(line) FROM {table} WHERE file_id IN ({ids}) GROUP BY file_id"
        ).fetchall()}  # fmt: skip
        redo = []
        for fid, src in part:
            n = lines[fid]
            if n and seen.get(fid) != (n, 1, n):  # a blank line, or rows out of order: the numbering is off
                cur.execute(f"DELETE FROM {table} WHERE file_id = {fid}")
                redo.append((fid, src))
        return redo

    def _robust(self, cur: duckdb.DuckDBPyConnection, table: str, one: tuple[int, Source]) -> None:
        try:
            cur.execute(insert_lines(table, [(one[0], one[1].path)]))
        except DATA_ERRORS:
            self._normalized(*one, cur=cur)

    def _normalized(self, fid: int, source: Source, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        con = cur or self.e.con
        out = normalize(source, self.e.tmp, f"n{fid}", self.check)
        with self.lock:
            self.report.ignored += out.ignored
            for line, message in out.problems:
                self.problem(fid, line, message)
            for rec, line in out.documents:
                self._add_document(rec, fid, line, source.path)
        for table, path in out.files.items():
            try:
                con.execute(insert_lines(table, [(fid, path)]))
            except DATA_ERRORS as exc:
                self.problem(fid, None, f"unreadable: {str(exc).splitlines()[0][:200]}")
            os.unlink(path)
        # lines past the last record (other log lines) count as read too
        con.execute("INSERT INTO samples (file_id, line, problem) VALUES (?, ?, 'blank')", [fid, out.lines])

    def _document(self, fid: int, source: Source) -> None:
        try:
            if source.size > MAX_DOCUMENT:
                raise ValueError(f"larger than {MAX_DOCUMENT >> 20} MB")
            with open(source.path, "rb") as fh:
                data = fh.read()
            if source.path.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            rec = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problem(fid, None, "invalid JSON (truncated or corrupt file)")
            return
        except (OSError, EOFError, ValueError) as exc:
            self.problem(fid, None, f"unreadable: {str(exc)[:200]}")
            return
        if type(rec) is not dict:
            self.problem(fid, None, "not a JSON object")
            return
        self._add_document(rec, fid, 0, source.path)

    def _add_document(self, rec: dict[str, Any], fid: int, line: int, path: str) -> None:
        tag = self.check(rec)
        if tag is None:
            self.problem(fid, line or None, "unsupported: " + self.check.last_refusal)
        elif tag == DUMP:
            self.docs["dumps"].append(dump_row(rec, fid, line))
        elif tag == CRASH:
            self.docs["crashes"].append(crash_row(rec, fid, line))
        else:
            self.problem(fid, line or None, f"unsupported: a {tag} record in a document file")

    def _parquet(self, source: Source) -> None:
        """An export (``memprof export --parquet``): its rows as they are, with new file ids."""
        table = source.table or ""
        src = f"read_parquet({quote(source.path)}, union_by_name=true)"
        cols = t.SCHEMA[table]
        try:
            files = [f for (f,) in self.e.rows(f"SELECT DISTINCT file FROM {src} ORDER BY file")]
            self.e.sql("CREATE OR REPLACE TEMP TABLE fmap (file VARCHAR, file_id INTEGER)")
            for f in files:
                self.e.sql("INSERT INTO fmap VALUES (?, ?)", [f, self.file_id(str(f), "exported")])
            select = ", ".join(
                "m.file_id AS file_id" if c == "file_id" else f'p."{c}"::{typ} AS "{c}"'
                for c, typ in cols.items()
            )
            self.e.sql(f"INSERT INTO {table} BY NAME SELECT {select} FROM {src} p JOIN fmap m USING (file)")
        # a corrupt file raises a plain duckdb.Error (a RuntimeError in DuckDB 1.4), another schema a binder error
        except (duckdb.Error, RuntimeError) as exc:
            why = "".join(ch if ch.isprintable() else "?" for ch in (str(exc).splitlines() or [""])[0][:200])
            self.problem(self.file_id(source.path, "parquet"), None, f"unreadable: {why}")
        self.e.checkpoint()

    def bad_worker_file(self, path: str, message: str) -> None:
        """A flight-recorder file that cannot be read: reported, left where it is."""
        self.problem(self.file_id(path, "worker"), None, message)

    def add_crash(self, rec: dict[str, Any], path: str) -> None:
        """A crash record built here (a dead worker's flight file): read like a crash document."""
        self.docs["crashes"].append(crash_row(rec, self.file_id(path, "worker"), 0))

    def _insert_documents(self) -> None:
        for table, rows in self.docs.items():
            if not rows:
                continue
            path = os.path.join(self.e.tmp, f"{table}.jsonl")
            with open(path, "wb") as fh:
                for row in rows:
                    fh.write(orjson.dumps(row) + b"\n")
            columns = "{" + ", ".join(f"{quote(c)}: {quote(typ)}" for c, typ in t.SCHEMA[table].items()) + "}"
            self.e.sql(f"INSERT INTO {table} SELECT * FROM read_json({quote(path)}, columns={columns}, "
                       "format='newline_delimited')")  # fmt: skip
            rows.clear()

    # -- after reading -----------------------------------------------------------------------------
    def _finish(self) -> None:
        e = self.e
        if self.python_problems:
            e.con.executemany("INSERT INTO problems VALUES (?, ?, ?, ?)", self.python_problems)
        lines: dict[int, int] = {}
        for table in ("samples", "states"):
            for fid, last in e.rows(f"SELECT file_id, max(line) FROM {table} GROUP BY file_id"):
                lines[fid] = max(lines.get(fid, 0), last or 0)
            if table == "samples" and self.in_place:  # exported rows: no problem column, nothing to skip
                continue
            e.sql(f"""INSERT INTO problems SELECT file_id, line, split_part(problem, chr(31), 1),
                      CASE WHEN strpos(problem, chr(31)) > 0 THEN substr(problem, strpos(problem, chr(31)) + 1) END
                      FROM {table} WHERE problem IS NOT NULL AND problem <> 'blank'""")
            e.sql(f"DELETE FROM {table} WHERE problem IS NOT NULL")
        self.report.lines = sum(lines.values())
        for fid, line in e.rows(
            "SELECT file_id, line FROM problems WHERE reason = 'invalid JSON' AND line IS NOT NULL"
        ):
            if line == lines.get(fid) and not ends_with_newline(self.paths[fid]):
                e.sql(
                    "UPDATE problems SET reason = 'truncated line' WHERE file_id = ? AND line = ?",
                    [fid, line],
                )
        e.checkpoint()
        self._report_problems()
        for table, tag in (("samples", SAMPLE), ("states", STATE), ("dumps", DUMP), ("crashes", CRASH)):
            n = e.value(f"SELECT count(*) FROM {table}")
            if n:
                self.report.records[tag] += n

    def _report_problems(self) -> None:
        report = self.report
        for reason, n in self.e.rows("SELECT reason, count(*) FROM problems GROUP BY reason ORDER BY reason"):
            report.skipped += n
            report.reasons[reason] += n
        for fid, line, reason, detail in self.e.rows(
            f"SELECT file_id, line, reason, detail FROM problems ORDER BY file_id, line NULLS FIRST LIMIT {MAX_EXAMPLES}"
        ):
            report.examples.append(Problem(self.paths[fid], line, _message(reason, detail)))


def _message(reason: str, detail: str | None) -> str:
    if reason == "unsupported" and detail and "\x1f" in detail:
        return "unsupported: " + refusal(*detail.split("\x1f", 1))
    if reason == "invalid record" and detail:
        return f"invalid record: a malformed {detail}"
    return f"{reason}: {detail}" if detail else reason


def _chunks(files: list[tuple[int, Source]]) -> Iterable[list[tuple[int, Source]]]:
    part: list[tuple[int, Source]] = []
    size = 0
    for item in files:
        if part and (size + item[1].size > CHUNK_BYTES or len(part) >= CHUNK_FILES):
            yield part
            part, size = [], 0
        part.append(item)
        size += item[1].size
    if part:
        yield part

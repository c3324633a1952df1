"""Lines the SQL reader cannot take as they are, sorted out in Python: logs and standard input (memprof
records among other lines), and data files DuckDB refused (a corrupt .gz, a line past its size limit).

The lines for each table are written to a temporary JSON Lines file with the same numbering as the
input (other lines left blank), so the SQL reader parses and validates them like any data file and the
records keep their original ``file:line``. Records found in a log that are documents (a dump or crash
record logged as JSON) are returned as they are.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

import orjson

from memprof.analysis.engine import MAX_TEXT
from memprof.analysis.sources import CRASH, DUMP, SAMPLE, SAMPLE_EVENT, STATE, Source, VersionCheck

MAX_LINE = 1000 * 1000
"""Longest line passed to the SQL reader as it is; a longer record is rewritten with its strings cut."""
MAX_DEPTH = 64
MAX_READ = 256 * 1024 * 1024
"""A line longer than this is not read whole: it is reported (and its file read on)."""
TABLES = {SAMPLE: "samples", STATE: "states"}


@dataclass
class Normalized:
    """What one source held: per table, the file of its lines; documents; counts and problems."""

    files: dict[str, str] = field(default_factory=dict)
    documents: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    lines: int = 0
    ignored: int = 0
    problems: list[tuple[int | None, str]] = field(default_factory=list)


def cut(value: Any, depth: int = 0) -> Any:
    """``value`` with every string cut to :data:`MAX_TEXT` characters and nothing nested deeper than
    :data:`MAX_DEPTH` (the analyzer reads nothing that deep)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return None
    if isinstance(value, dict):
        return {cut(k, depth + 1): cut(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [cut(v, depth + 1) for v in value]
    return value


def _open(source: Source) -> BinaryIO:
    if source.path == "-":
        return sys.stdin.buffer
    if source.path.endswith(".gz"):
        return cast(BinaryIO, gzip.open(source.path, "rb"))
    return open(source.path, "rb")


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of ``stream``; a line longer than :data:`MAX_READ` is returned cut (and fails to parse)."""
    limit = MAX_READ
    while True:
        raw = stream.readline(limit)
        if not raw:
            return
        if len(raw) == limit and not raw.endswith(b"\n"):
            while True:  # drop the rest of an absurdly long line
                more = stream.readline(limit)
                if not more or more.endswith(b"\n"):
                    break
            raw = raw[:100]
        yield raw


class _Writer:
    """One temporary file per table, each with a line for every input line."""

    def __init__(self, out_dir: str, stem: str, result: Normalized) -> None:
        self.out_dir, self.stem, self.result = out_dir, stem, result
        self.handles: dict[str, IO[bytes]] = {}
        self.written: dict[str, int] = {}

    def put(self, table: str, lineno: int, data: bytes) -> None:
        fh = self.handles.get(table)
        if fh is None:
            path = os.path.join(self.out_dir, f"{self.stem}-{table}.jsonl")
            self.result.files[table] = path
            fh = self.handles[table] = open(path, "wb")  # noqa: SIM115 - closed in close()
            self.written[table] = 0
        fh.write(b"\n" * (lineno - 1 - self.written[table]))
        fh.write(data.rstrip(b"\r\n") + b"\n")
        self.written[table] = lineno

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


def _parse(raw: bytes, strict: bool) -> tuple[Any, bool]:
    """``(record or None, rewritten)``: a log line may carry a prefix (``kubectl logs --timestamps``)."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        pass
    start = raw.find(b"{")
    if start > 0 and not strict:
        try:
            return orjson.loads(raw[start:]), True
        except orjson.JSONDecodeError:
            pass
    return None, False


def normalize(source: Source, out_dir: str, stem: str, check: VersionCheck) -> Normalized:
    """Sort the lines of ``source`` out into per-table files under ``out_dir`` (see the module doc)."""
    result = Normalized()
    writer = _Writer(out_dir, stem, result)
    stream = _open(source)
    lineno = 0
    try:
        for lineno, raw in enumerate(_lines(stream), 1):
            _one(source, raw, lineno, writer, result, check)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # a corrupt or truncated .gz
        result.problems.append(
            (None, f"unreadable: {str(exc)[:200] or type(exc).__name__} (after line {lineno})")
        )
    finally:
        result.lines = lineno
        writer.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    return result


def _one(
    source: Source, raw: bytes, lineno: int, writer: _Writer, result: Normalized, check: VersionCheck
) -> None:
    if not raw.strip():
        return
    rec, rewritten = _parse(raw, source.strict)
    if source.strict and source.table is not None:  # a data file: the SQL reader judges every line
        if rec is None:
            if len(raw) <= MAX_LINE and b"\x01" not in raw:
                writer.put(source.table, lineno, raw)  # a deep or odd value: let the reader decide
            else:
                result.problems.append((lineno, "invalid JSON" if raw.endswith(b"\n") else "truncated line"))
        elif len(raw) > MAX_LINE:
            writer.put(source.table, lineno, orjson.dumps(cut(rec)))
        else:
            writer.put(source.table, lineno, raw)
        return
    if rec is None:
        if b'"memprof.' in raw:
            result.problems.append((lineno, "truncated line" if not raw.endswith(b"\n") else "invalid JSON"))
        else:
            result.ignored += 1
        return
    if type(rec) is not dict:
        result.ignored += 1
        return
    tag = rec.get("schema")
    if tag is None and rec.get("event") == SAMPLE_EVENT:  # a structlog event whose processors dropped it
        rec["schema"], rec["version"], tag, rewritten = SAMPLE, "1.0", SAMPLE, True
    if not (isinstance(tag, str) and tag.startswith("memprof.")):
        result.ignored += 1  # an application's own line, even with a "schema" key of its own
        return
    if check(rec) is None:
        result.problems.append((lineno, "unsupported: " + check.last_refusal))
        return
    if tag in (DUMP, CRASH):
        result.documents.append((rec, lineno))
        return
    data = orjson.dumps(cut(rec)) if rewritten or len(raw) > MAX_LINE else raw
    writer.put(TABLES[tag], lineno, data)

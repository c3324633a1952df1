"""Finding and reading memprof records: data dirs, JSON Lines files, structlog logs, standard input.

Everything bad in the input (a truncated line, a corrupt dump, a record of an unknown major version) is
counted in a :class:`LoadReport` with the file and line, and skipped: reading never raises on bad
input. Only a path that does not exist, or inputs holding no memprof files at all, raise
:class:`InputError` (one clear sentence for the CLI).
"""

from __future__ import annotations

import gzip
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from memprof.records.versions import UnsupportedRecord, check_version

SAMPLE = "memprof.sample"
DUMP = "memprof.dump"
CRASH = "memprof.crash"
STATE = "memprof.state"
SAMPLE_EVENT = "memprof.request.completed"
MAX_EXAMPLES = 20

Record = dict[str, Any]
Progress = Callable[[int], None]


class InputError(ValueError):
    """The inputs cannot be analysed at all (missing path, no memprof files)."""


@dataclass(frozen=True)
class Source:
    """One input: ``lines`` (JSON Lines: samples, state, structlog logs) or ``document`` (dump, crash)."""

    path: str
    kind: str  # "lines" | "document"
    strict: bool = True  # lines that are not JSON are problems (data files) or ignored (logs)
    size: int = 0


@dataclass
class Problem:
    """One skipped input: where and why."""

    file: str
    line: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class LoadReport:
    """What was read and what was skipped (counts, reasons and the first examples)."""

    paths: list[str] = field(default_factory=list)
    files: int = 0
    lines: int = 0
    records: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)

    def problem(self, file: str, line: int | None, reason: str) -> None:
        """Count one skipped line or file."""
        self.skipped += 1
        key = reason.split(":", 1)[0]
        self.reasons[key] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(Problem(file, line, reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "files": self.files,
            "lines": self.lines,
            "records": {k.split(".", 1)[1]: self.records[k] for k in sorted(self.records)},
            "ignored_lines": self.ignored,
            "skipped": self.skipped,
            "skipped_by_reason": dict(sorted(self.reasons.items())),
            "problems": [p.to_dict() for p in self.examples],
        }


def _classify(name: str) -> str | None:
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".jsonl") and (base.startswith("samples-") or base.startswith("state-")):
        return "lines"
    if base.endswith(".json") and (base.startswith("dump-") or base.startswith("crash-")):
        return "document"
    return None


def discover(inputs: Iterable[str]) -> list[Source]:
    """The sources of ``inputs``: data dirs (searched recursively), files, or ``-`` for standard input."""
    sources: list[Source] = []
    for raw in inputs:
        if raw == "-":
            sources.append(Source("-", "lines", strict=False))
            continue
        path = Path(raw)
        if path.is_file():
            kind = _classify(path.name)
            if kind is None:  # any other file is read as a log of JSON lines (structlog output)
                sources.append(Source(raw, "lines", strict=False, size=path.stat().st_size))
            else:
                sources.append(Source(raw, kind, size=path.stat().st_size))
            continue
        if not path.is_dir():
            raise InputError(
                f"{raw} does not exist: pass a memprof data dir (MEMPROF_DATA_DIR), a log file or -"
            )
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                kind = _classify(name)
                if kind is not None:
                    full = os.path.join(root, name)
                    try:
                        size = os.path.getsize(full)
                    except OSError:
                        continue
                    found.append(Source(full, kind, size=size))
        if not found:
            raise InputError(
                f"{raw} holds no memprof data (no samples-*.jsonl, state-*.jsonl, dumps/ or crashes/ files): "
                "is it the MEMPROF_DATA_DIR of a profiled app that has served requests?"
            )
        sources.extend(found)
    return sources


class VersionCheck:
    """Memoised record version check: (tag, version) -> tag, or the refusal message."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, Any], str | None] = {}
        self.refusals: dict[tuple[Any, Any], str] = {}
        self.last_refusal = ""

    def __call__(self, rec: Record) -> str | None:
        key = (rec.get("schema"), rec.get("version"))
        try:
            hit = key in self._seen
        except TypeError:  # a list or an object where a string belongs
            key = (repr(key[0]), repr(key[1]))
            rec = {"schema": key[0], "version": key[1]}
            hit = key in self._seen
        if hit:
            seen = self._seen[key]
            if seen is None:
                self.last_refusal = self.refusals[key]
            return seen
        result: str | None = None
        try:
            result = check_version(rec)
        except UnsupportedRecord as exc:
            self.refusals[key] = self.last_refusal = str(exc)
        self._seen[key] = result
        return result


def _open(source: Source) -> IO[bytes]:
    if source.path == "-":
        return sys.stdin.buffer
    if source.path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(source.path, "rb"))
    return open(source.path, "rb")


def _lines(source: Source, report: LoadReport, check: VersionCheck) -> Iterator[tuple[str, Record, int]]:
    loads = orjson.loads
    path = source.path
    stream = _open(source)
    try:
        lineno = 0
        for raw in stream:
            lineno += 1
            try:
                rec = loads(raw)
            except orjson.JSONDecodeError:
                if not raw.strip():
                    continue
                start = raw.find(b"{")  # `kubectl logs --timestamps` and friends prefix the JSON
                rec = None
                if start > 0:
                    try:
                        rec = loads(raw[start:])
                    except orjson.JSONDecodeError:
                        rec = None
                if rec is None:
                    if source.strict or b'"memprof.' in raw:
                        truncated = not raw.endswith(b"\n")
                        report.problem(path, lineno, "truncated line" if truncated else "invalid JSON")
                    else:
                        report.ignored += 1
                    continue
            if type(rec) is not dict:
                if source.strict:
                    report.problem(path, lineno, "not a JSON object")
                else:
                    report.ignored += 1
                continue
            if "schema" not in rec:
                if rec.get("event") == SAMPLE_EVENT:  # a structlog event whose processors dropped the tag
                    rec["schema"], rec["version"] = SAMPLE, "1.0"
                elif source.strict:
                    report.problem(path, lineno, "not a memprof record: no schema tag")
                    continue
                else:
                    report.ignored += 1
                    continue
            tag = check(rec)
            if tag is None:
                report.problem(path, lineno, "unsupported: " + check.last_refusal)
                continue
            yield tag, rec, lineno
        report.lines += lineno
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _document(source: Source, report: LoadReport, check: VersionCheck) -> Iterator[tuple[str, Record, int]]:
    try:
        with _open(source) as fh:
            rec = orjson.loads(fh.read())
    except (OSError, EOFError) as exc:
        report.problem(source.path, None, f"unreadable: {exc}")
        return
    except orjson.JSONDecodeError:
        report.problem(source.path, None, "invalid JSON (truncated or corrupt file)")
        return
    if type(rec) is not dict:
        report.problem(source.path, None, "not a JSON object")
        return
    tag = check(rec)
    if tag is None:
        report.problem(source.path, None, "unsupported: " + check.last_refusal)
        return
    yield tag, rec, 0


def read_source(source: Source, report: LoadReport, check: VersionCheck) -> Iterator[tuple[str, Record, int]]:
    """Yield ``(tag, record, line)`` of one source (line 0 for a document); problems go into ``report``."""
    reader = _document if source.kind == "document" else _lines
    return reader(source, report, check)


def iter_records(
    sources: list[Source], report: LoadReport, progress: Progress | None = None
) -> Iterator[tuple[str, Record, str, int]]:
    """Yield ``(tag, record, file, line)`` for every readable record; problems go into ``report``."""
    check = VersionCheck()
    for source in sources:
        report.files += 1
        try:
            for tag, rec, line in read_source(source, report, check):
                report.records[tag] += 1
                yield tag, rec, source.path, line
        except (OSError, EOFError) as exc:  # EOFError: a truncated .gz file
            report.problem(source.path, None, f"unreadable: {exc}")
        if progress is not None:
            progress(source.size)

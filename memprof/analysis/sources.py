"""Finding memprof records: data dirs, JSON Lines files, structlog logs, Parquet exports, standard input.

Everything bad in the input is counted in a :class:`LoadReport` with the file and line, and skipped:
reading never raises on bad input. Only a path that does not exist, or inputs holding no memprof files
at all, raise :class:`InputError` (one clear sentence for the CLI).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memprof.records.versions import UnsupportedRecord, check_version

SAMPLE = "memprof.sample"
DUMP = "memprof.dump"
CRASH = "memprof.crash"
STATE = "memprof.state"
SAMPLE_EVENT = "memprof.request.completed"
MAX_EXAMPLES = 20
PARQUET_TABLES = ("samples", "states", "dumps", "crashes", "problems")
URL_SCHEMES = (
    "s3://",
    "s3a://",
    "gs://",
    "gcs://",
    "az://",
    "azure://",
    "abfss://",
    "r2://",
    "http://",
    "https://",
    "hf://",
)

Record = dict[str, Any]
Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: a phase name ("reading", "computing"), units done and in all."""


class InputError(ValueError):
    """The inputs cannot be analysed at all (missing path, no memprof files)."""


@dataclass(frozen=True)
class Source:
    """One input. ``kind``: ``lines`` (JSON Lines), ``document`` (one JSON record: a dump or crash) or
    ``parquet`` (an export). ``table``: where the lines of a data file go (``samples``, ``states``);
    None for a log or a stream, whose lines are sorted out one by one. ``problem``: why it is skipped."""

    path: str
    kind: str
    strict: bool = True  # lines that are not memprof records are problems (data files) or ignored (logs)
    size: int = 0
    table: str | None = None
    problem: str | None = None
    stream: bool = False  # standard input, a pipe or a device: read once, in order


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


def classify(name: str) -> tuple[str, str | None] | None:
    """``(kind, table)`` of a memprof file name; None for any other name."""
    if name.endswith(".parquet"):
        table = next((t for t in PARQUET_TABLES if name.startswith(t)), None)
        return ("parquet", table) if table else None
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".jsonl") and base.startswith("samples-"):
        return "lines", "samples"
    if base.endswith(".jsonl") and base.startswith("state-"):
        return "lines", "states"
    if base.endswith(".json") and (base.startswith("dump-") or base.startswith("crash-")):
        return "document", None
    return None


def _file_source(path: str, st: os.stat_result, strict_kind: tuple[str, str | None] | None) -> Source:
    if not stat.S_ISREG(st.st_mode):  # a pipe (<(zcat ...)), a FIFO or a device named on the command line
        return Source(path, "lines", strict=False, stream=True)
    if strict_kind is None:  # any other file is read as a log of JSON lines (structlog output)
        return Source(path, "lines", strict=False, size=st.st_size)
    kind, table = strict_kind
    return Source(path, kind, size=st.st_size, table=table)


def discover(inputs: Iterable[str]) -> list[Source]:
    """The sources of ``inputs``: data dirs (searched recursively), files, or ``-`` for standard input.

    In a data dir, a file with a memprof name that is not a regular file (a FIFO, a device) is listed
    with its ``problem`` and never opened: reading it could block for ever.
    """
    sources: list[Source] = []
    for raw in inputs:
        if raw == "-":
            sources.append(Source("-", "lines", strict=False, stream=True))
            continue
        if raw.startswith(URL_SCHEMES):  # object storage: DuckDB reads it (httpfs), globs included
            kind = classify(raw.rstrip("/").rsplit("/", 1)[-1])
            if kind is None or kind[0] != "parquet":
                raise InputError(
                    f"{raw}: only Parquet exports (samples*.parquet, ...) are read from object storage"
                )
            sources.append(Source(raw, "parquet", table=kind[1]))
            continue
        try:
            st = os.stat(raw)
        except OSError:
            raise InputError(
                f"{raw} does not exist: pass a memprof data dir (MEMPROF_DATA_DIR), a log file or -"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            sources.append(_file_source(raw, st, classify(Path(raw).name)))
            continue
        found = _walk(raw)
        if not found:
            raise InputError(
                f"{raw} holds no memprof data (no samples-*.jsonl, state-*.jsonl, dumps/ or crashes/ files): "
                "is it the MEMPROF_DATA_DIR of a profiled app that has served requests?"
            )
        sources.extend(found)
    return sources


def _walk(root: str) -> list[Source]:
    found: list[Source] = []
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            kind = classify(name)
            if kind is None:
                continue
            full = os.path.join(base, name)
            try:
                st = os.stat(full)
            except OSError:
                continue  # removed since it was listed (a rotated or cleaned-up file)
            if not stat.S_ISREG(st.st_mode):
                found.append(
                    Source(full, kind[0], problem="not a regular file (a FIFO or a device): not read")
                )
            else:
                found.append(Source(full, kind[0], size=st.st_size, table=kind[1]))
    return found


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
            key = (repr(key[0])[:100], repr(key[1])[:100])
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
            self.refusals[key] = self.last_refusal = str(exc)[:300]
        if len(self._seen) < 10_000:
            self._seen[key] = result
        return result


def refusal(tag: Any, version: Any) -> str:
    """Why a record of this tag and version is refused (the :func:`check_version` message)."""
    try:
        check_version({"schema": tag, "version": version})
    except UnsupportedRecord as exc:
        return str(exc)[:300]
    return f"a {tag} record where another kind belongs"

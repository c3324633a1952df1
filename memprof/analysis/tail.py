"""Following a data dir as records are written: new sample lines, new dumps and crash records.

:class:`Follower` is poll-based and bounded (no threads, no inotify): each :meth:`Follower.poll` reads
what was appended since the last one. Partial lines (a writer mid-line) wait for their newline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from memprof.analysis.sources import LoadReport, Source, VersionCheck, discover

Event = tuple[str, dict[str, Any], str]


class Follower:
    """Reads new records from data dirs. ``from_start`` also yields what is already there."""

    def __init__(self, paths: list[str], *, from_start: bool = False) -> None:
        self.paths = paths
        self.report = LoadReport()
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._lines: dict[str, int] = {}
        self._check = VersionCheck()
        if not from_start:
            for source in self._sources():
                self._offsets[source.path] = source.size
                self._lines[source.path] = _count_lines(source.path) if source.kind == "lines" else 0

    def _sources(self) -> list[Source]:
        out: list[Source] = []
        for p in self.paths:
            try:
                found = discover([p])
            except ValueError:  # not there yet, or still empty: nothing new
                continue
            # never open a FIFO or a device (it could block), nor an export
            out.extend(
                s for s in found if s.problem is None and not s.stream and s.kind in ("lines", "document")
            )
        return out

    def poll(self) -> list[Event]:
        """Every record written since the previous poll, files in name order."""
        events: list[Event] = []
        for source in self._sources():
            seen = self._offsets.get(source.path)
            if source.kind == "document":
                if seen is None:
                    self._offsets[source.path] = source.size
                    events.extend(self._document(source))
                continue
            if seen is not None and source.size <= seen:
                if source.size < seen:  # truncated or replaced: start over
                    self._offsets[source.path] = 0
                continue
            events.extend(self._read_lines(source, seen or 0))
        return events

    def _document(self, source: Source) -> Iterator[Event]:
        try:
            with open(source.path, "rb") as fh:
                rec = orjson.loads(fh.read())
        except (OSError, orjson.JSONDecodeError):
            self.report.problem(source.path, None, "invalid JSON (truncated or corrupt file)")
            return
        if isinstance(rec, dict) and (tag := self._check(rec)) is not None:
            yield tag, rec, source.path

    def _read_lines(self, source: Source, offset: int) -> Iterator[Event]:
        try:
            with open(source.path, "rb") as fh:
                fh.seek(offset)
                data = self._partial.pop(source.path, b"") + fh.read()
                self._offsets[source.path] = fh.tell()
        except OSError:
            return
        *complete, rest = data.split(b"\n")
        if rest:
            self._partial[source.path] = rest
        for raw in complete:
            self._lines[source.path] = lineno = self._lines.get(source.path, 0) + 1
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.report.problem(source.path, lineno, "invalid JSON")
                continue
            if not isinstance(rec, dict):
                continue
            tag = self._check(rec)
            if tag is None:
                self.report.problem(source.path, lineno, "unsupported record")
                continue
            yield tag, rec, f"{source.path}:{lineno}"


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


def is_high(tag: str, rec: dict[str, Any], growth_threshold: int, limit_fraction: float = 0.8) -> bool:
    """Whether a tailed record deserves highlighting: dumps, crashes, big growth, or near the limit."""
    if tag in ("memprof.dump", "memprof.crash"):
        return True
    if tag != "memprof.sample":
        return False
    mem = rec.get("memory") or {}
    start = int(mem.get("rss_start") or 0)
    peak = max(
        [int(mem.get("rss_end") or 0), *(int(c.get("rss") or 0) for c in rec.get("checkpoints") or ())]
    )
    limit = mem.get("limit")
    return peak - start >= growth_threshold or bool(limit and peak >= limit_fraction * limit)


__all__ = ["Event", "Follower", "is_high"]

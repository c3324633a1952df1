"""Samples files: their names, which worker wrote them, and the size cap that never touches a live one.

A writer appends to ``samples-<start>-<host>-<pid>-<seq>.jsonl``: ``<start>`` is when the writer began
(UTC, to the second: names sort by time and tell a reused pid from the worker that wrote the file),
``<host>`` and ``<pid>`` name the worker, ``<seq>`` counts its rotations. Workers of several processes,
and of several hosts on a shared volume, write into one data dir, so the size cap
(``MEMPROF_MAX_TOTAL_MB``) is enforced by each writer over every samples file, but a writer only ever
removes its own closed files, or files of a worker of its host that is gone
(:func:`memprof.workers.worker_alive`). A file of a live worker, of another host, or with a name
memprof did not write is never removed: deleting a file another process still appends to would lose
everything written to it afterwards. Each record is one line (:func:`encode_line`).
"""

from __future__ import annotations

import json
import re
import time
from calendar import timegm
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from memprof.workers import worker_alive

SAMPLES_GLOB = "samples-*.jsonl"
STAMP = "%Y%m%dT%H%M%S"
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"samples-(\d{8}T\d{6})-(.+)-(\d+)-(\d+)\.jsonl")
_LEGACY = re.compile(r"samples-(\d{8}T\d{6})-(\d+)-(\d+)\.jsonl")  # before hosts were named (one host)


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON Lines line (UTF-8, compact, newline-terminated). orjson takes ~1 µs where the standard
    library's encoder takes ~13 µs for a sample record; what orjson refuses (an integer beyond 64 bits in
    a recorded parameter, say) goes through the standard library. Anything else becomes its ``str``."""
    try:
        return orjson.dumps(record, default=str, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


def safe_host(host: str) -> str:
    """``host`` as it appears in file names (characters outside ``[A-Za-z0-9._-]`` become ``_``)."""
    return _HOST_UNSAFE.sub("_", host) or "_"


def sample_file_name(started: str, host: str, pid: int, seq: int) -> str:
    """The name of a writer's ``seq``-th samples file; ``started`` is a UTC :data:`STAMP`."""
    return f"samples-{started}-{safe_host(host)}-{pid}-{seq:04d}.jsonl"


@dataclass(frozen=True)
class SampleFile:
    """Who wrote a samples file: host (None in names from before hosts were named), pid, writer start."""

    path: Path
    host: str | None
    pid: int
    started: float  # unix seconds, to the second


def parse_name(path: Path) -> SampleFile | None:
    """The writer of a samples file, or None for a name memprof did not write."""
    match = _NAME.fullmatch(path.name)
    if match is not None:
        stamp, host, pid, _seq = match.groups()
    else:
        match = _LEGACY.fullmatch(path.name)
        if match is None:
            return None
        stamp, pid, _seq = match.groups()
        host = None
    try:
        started = float(timegm(time.strptime(stamp, STAMP)))
    except ValueError:
        return None
    return SampleFile(path, host, int(pid), started)


def count_lines(path: Path) -> int:
    """Complete lines in ``path`` (a torn last line, with no newline, is not a record)."""
    lines = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


@dataclass
class Removal:
    """What one enforcement removed."""

    files: int = 0
    records: int = 0
    bytes: int = 0


def enforce_total(
    data_dir: Path, max_total_bytes: int, *, host: str, own_closed: Mapping[Path, int]
) -> tuple[Removal, list[Path]]:
    """Remove samples files, oldest first, until the data dir's samples files fit ``max_total_bytes``.

    Removable: this writer's own closed files (``own_closed``: path -> records written to it) and the
    files of workers of ``host`` that are gone; nothing else, even when the cap cannot be met. Returns
    what was removed (records of another worker's file counted from its complete lines) and the paths.
    """
    files = []
    total = 0
    for path in data_dir.glob(SAMPLES_GLOB):
        try:
            st = path.stat()
        except OSError:
            continue
        total += st.st_size
        files.append((st.st_mtime, path.name, path, st.st_size))
    removal, removed = Removal(), list[Path]()
    if total <= max_total_bytes:
        return removal, removed
    mine = safe_host(host)
    alive: dict[tuple[int, float], bool] = {}
    for _mtime, _name, path, size in sorted(files):
        if total <= max_total_bytes:
            break
        records = own_closed.get(path)
        if records is None:
            owner = parse_name(path)
            if owner is None or (owner.host is not None and owner.host != mine):
                continue  # not memprof's name, or another host's worker: not ours to judge
            key = (owner.pid, owner.started)
            if key not in alive:
                alive[key] = worker_alive(owner.pid, owner.started)
            if alive[key]:
                continue  # a live worker's file: it may still append to it
            try:
                records = count_lines(path)
            except OSError:
                continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removal.files += 1
        removal.records += records
        removal.bytes += size
        removed.append(path)
    return removal, removed

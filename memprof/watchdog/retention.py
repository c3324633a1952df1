"""Dump files: names that sort by time, retention by count, age and total size."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def dump_filename(when: float, pid: int, trigger: str, name: str | None) -> str:
    """``dump-<UTC YYYYmmddTHHMMSSffffff>-<pid>-<trigger>[-<name>].json``: sorts by time."""
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S%f")
    suffix = ""
    if name:
        clean = _NAME_RE.sub("_", name).strip("_.")[:64]
        suffix = f"-{clean}" if clean else ""
    return f"dump-{stamp}-{pid}-{trigger}{suffix}.json"


def apply_retention(
    directory: Path, *, keep: int, max_age_s: float, max_total_bytes: int, protect: Path | None = None
) -> list[Path]:
    """Remove dumps past ``keep`` files, older than ``max_age_s`` or over ``max_total_bytes``, oldest
    first; ``protect`` (the dump just written) is never removed. Returns the removed paths."""
    files = []
    for path in directory.glob("dump-*.json"):
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((path.name, path, st.st_size, st.st_mtime))
    files.sort(reverse=True)  # newest first: names sort by time
    now = time.time()
    removed = []
    total = 0
    for index, (_name, path, size, mtime) in enumerate(files):
        total += size
        too_many = index >= keep
        too_old = now - mtime > max_age_s
        too_big = total > max_total_bytes
        if path != protect and (too_many or too_old or too_big):
            try:
                path.unlink()
                removed.append(path)
                total -= size
            except OSError:
                pass
    for stale in directory.glob(".dump-*.tmp"):  # left by a process killed mid-write
        try:
            if now - stale.stat().st_mtime > 300:
                stale.unlink()
        except OSError:
            pass
    return removed

"""The control plane's formats: what ``memprof enable|disable|status`` write and the workers read.

One home for the files in the data dir (``control.json``, the kill-switch file, ``status/<worker>.json``)
and the Redis keys (``<prefix>disable``, ``<prefix>mode``, ``<prefix>worker:<worker>``), so that the
writer (the CLI) and the reader (each worker's :class:`memprof.safety.control.Controller`) cannot drift.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memprof.files import ensure_private_dir, write_private
from memprof.settings import Mode

CONTROL_FILE = "control.json"
# Not DATA_DIR/workers/: that holds the flight recorder's <host>-<pid>.json files.
STATUS_DIR = "status"
STATUS_SUFFIX = ".json"
STATUS_TTL_S = 30
REDIS_TIMEOUT_S = 0.25
OFF = "off"
# An aggressive override that names no end (a hand-written file or Redis key) ends this long after it
# was first seen: an aggressive window always expires by itself.
AGGRESSIVE_DEFAULT_S = 30 * 60
# No runtime override that profiles lasts longer than this from when it was set, whatever wrote it (the
# CLI refuses longer windows; a worker cuts a hand-written file's or a Redis key's). An "off" override
# lasts as asked: narrowing to nothing is always safe.
MAX_OVERRIDE_S = 24 * 3600
# Status files are padded to a multiple of this with blanks (valid JSON), so that on a full disk a
# worker can still rewrite its status in place, in blocks the file already holds.
STATUS_BLOCK = 4096


@dataclass(frozen=True)
class Override:
    """A runtime mode override: ``mode`` is a mode name or ``off``; ``until`` a wall-clock expiry."""

    mode: str
    until: float | None
    source: str

    def live(self, now: float) -> bool:
        """Still in force at ``now``."""
        return self.until is None or now < self.until


def control_path(data_dir: Path) -> Path:
    """Where ``memprof enable`` writes the mode override for the workers sharing ``data_dir``."""
    return data_dir / CONTROL_FILE


def status_dir(data_dir: Path) -> Path:
    """Where workers publish their status files."""
    return data_dir / STATUS_DIR


def status_path(data_dir: Path, worker: str) -> Path:
    """One worker's status file."""
    return status_dir(data_dir) / f"{worker}{STATUS_SUFFIX}"


def parse_override(data: Any, source: str) -> Override | None:
    """An :class:`Override` from the control file's JSON (None when absent or unusable)."""
    if not isinstance(data, dict) or data.get("mode") in (None, ""):
        return None
    mode = str(data["mode"])
    if mode != OFF and mode not in {m.value for m in Mode}:
        return None
    until = data.get("until")
    return Override(mode, float(until) if isinstance(until, int | float) else None, source)


def bounded(override: Override | None, start: float) -> Override | None:
    """``override`` set at ``start`` within its limits: an aggressive one that names no end lasts
    :data:`AGGRESSIVE_DEFAULT_S`, and none but ``off`` lasts past ``start`` + :data:`MAX_OVERRIDE_S`."""
    if override is None or override.mode == OFF:
        return override
    until = override.until
    if until is None and override.mode == Mode.AGGRESSIVE:
        until = start + AGGRESSIVE_DEFAULT_S
    cap = start + MAX_OVERRIDE_S
    if until is None or until > cap:
        until = cap
    return override if until == override.until else Override(override.mode, until, override.source)


def read_control_file(path: Path, mtime: float) -> Override | None:
    """The override in the control file (modified at ``mtime``, when it was set), within its limits
    (:func:`bounded`). Raises OSError/ValueError when it cannot be read or parsed (being rewritten, or
    broken)."""
    override = parse_override(json.loads(path.read_text()), "control_file")
    return bounded(override, min(mtime, time.time()))


def write_override(data_dir: Path, mode: str | None, until: float | None) -> None:
    """Set (or, with ``mode`` None, clear) the override in the control file."""
    path = control_path(ensure_private_dir(data_dir))
    if mode is None:
        path.unlink(missing_ok=True)
    else:
        write_private(path, json.dumps({"mode": mode, "until": until, "set_at": time.time()}).encode())


def write_kill_switch(path: Path) -> None:
    """Create the kill-switch file (its existence disables profiling)."""
    write_private(path, json.dumps({"disabled_at": time.time(), "by": "memprof disable"}).encode())


def write_status(data_dir: Path, worker: str, text: str) -> None:
    """Publish one worker's status file (not fsynced: it is rewritten every few seconds).

    The file is replaced atomically, padded with blanks to a multiple of :data:`STATUS_BLOCK`; when that
    fails (a full disk has no room for the temporary file) the existing file is overwritten in place,
    when the status fits in it, so a worker on a full disk still shows its counts and its breaker.
    Raises OSError when neither works.
    """
    data = text.encode()
    data += b" " * (-(len(data) + 1) % STATUS_BLOCK) + b"\n"
    path = status_path(data_dir, worker)
    try:
        write_private(path, data, durable=False)
    except OSError:
        if not _rewrite_in_place(path, text.encode()):
            raise


def _rewrite_in_place(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if len(data) >= size:
            return False
        os.pwrite(fd, data + b" " * (size - len(data) - 1) + b"\n", 0)  # same size: no new blocks
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def disable_key(prefix: str) -> str:
    """The Redis key whose presence disables profiling on every worker."""
    return prefix + "disable"


def mode_key(prefix: str) -> str:
    """The Redis key holding the fleet's mode override (its TTL is the window)."""
    return prefix + "mode"


def worker_key(prefix: str, worker: str) -> str:
    """The Redis key one worker publishes its status to."""
    return f"{prefix}worker:{worker}"


def redis_client(url: str) -> Any:
    """A Redis client for the control plane: short timeouts, no retries (callers run in the background)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=True,
    )

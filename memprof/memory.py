"""Memory readings: fast RSS, process peak, and the memory limit with its source.

The request path reads RSS with one ``os.pread`` on a kept ``/proc/self/statm`` descriptor (about
1-3 µs; psutil reopens the file each call and costs 11-23 µs). A descriptor opened before ``fork()``
keeps reporting the parent, so it is reopened in every child. Elsewhere (macOS, Windows) psutil is used.

The request path reads through :func:`rss_at` and :func:`peak_at`, which share one kernel reading among
readings less than ``READING_RESOLUTION_NS`` (20 µs) apart: the checkpoints of a request whose app did
nothing between them (``response_start``, ``response_end`` and ``request_end`` of a small JSON response
come microseconds apart) cost one read instead of three. In 20 µs the kernel can fault in at most a few
hundred KB (page faults run at a few GB/s), far below what any finding looks at.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# A limit above this is "no limit" (cgroup v1 reports ~2**63 rounded to pages when unlimited).
_ABSURD_LIMIT = 1 << 60
_STATM = "/proc/self/statm"

_fd: int = -1
_fd_lock = threading.Lock()


def _open_statm() -> None:
    global _fd
    with _fd_lock:
        if _fd >= 0:
            try:
                os.close(_fd)
            except OSError:
                pass
        try:
            _fd = os.open(_STATM, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            _fd = -1


def _reopen_after_fork() -> None:
    global _fd
    # The child inherited the parent's descriptor, which still reads the parent's statm.
    _fd = -1
    _open_statm()
    _forget_readings()


READING_RESOLUTION_NS = 10000
"""Readings on the request path closer together than this (``perf_counter_ns``) share one kernel read."""

_NEVER = (-(1 << 62), 0)
# (perf_counter_ns of the reading, bytes): one tuple, replaced whole, so threads never see half of it.
_last_rss: tuple[int, int] = _NEVER
_last_peak: tuple[int, int] = _NEVER


def _forget_readings() -> None:
    global _last_rss, _last_peak
    _last_rss = _last_peak = _NEVER


if sys.platform.startswith("linux"):
    _open_statm()


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): a fresh lock, this process's own statm descriptor
    (the inherited one still reads the parent's) and no reading of the parent's kept."""
    global _fd_lock
    _fd_lock = threading.Lock()
    if sys.platform.startswith("linux"):
        _reopen_after_fork()
    else:
        _forget_readings()


def rss_at(now_ns: int) -> int:
    """RSS at ``now_ns`` (``time.perf_counter_ns()``): the last reading when it is less than
    ``READING_RESOLUTION_NS`` older, else a fresh one."""
    global _last_rss
    then, rss = _last_rss
    if 0 <= now_ns - then < READING_RESOLUTION_NS:
        return rss
    rss = rss_bytes()
    _last_rss = (now_ns, rss)
    return rss


def peak_at(now_ns: int) -> int:
    """The process peak (:func:`peak_rss_bytes`) at ``now_ns``, shared like :func:`rss_at`."""
    global _last_peak
    then, peak = _last_peak
    if 0 <= now_ns - then < READING_RESOLUTION_NS:
        return peak
    peak = peak_rss_bytes()
    _last_peak = (now_ns, peak)
    return peak


def rss_bytes() -> int:
    """Current resident set size of this process in bytes (0 if it cannot be read)."""
    fd = _fd
    if fd >= 0:
        try:
            data = os.pread(fd, 64, 0)
            return int(data.split(None, 2)[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            pass
    return _rss_psutil()


def _rss_psutil() -> int:
    import psutil  # only where /proc is missing (macOS, Windows): a Linux worker never loads it

    try:
        return int(psutil.Process().memory_info().rss)
    except (psutil.Error, OSError):
        return 0


# On Linux RUSAGE_THREAD reports the same process-wide peak (the mm's high-water mark) as RUSAGE_SELF,
# without summing every thread's usage under a lock: 0.8 µs instead of 1.9 µs with a 40-thread pool.
_RUSAGE = (
    getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    if sys.platform.startswith("linux")
    else resource.RUSAGE_SELF
)


def peak_rss_bytes() -> int:
    """Highest RSS this process has reached (``getrusage``), in bytes."""
    peak = resource.getrusage(_RUSAGE).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """The memory limit memprof measures against and where it came from."""

    bytes: int
    source: str  # setting, cgroup_v2, cgroup_v1, rlimit_as, physical


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _ABSURD_LIMIT else None


def _cgroup_v2_dir(root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            rel = line[3:].strip().lstrip("/")
            candidate = root / rel
            if (candidate / "memory.max").exists():
                return candidate
            if (root / "memory.max").exists():
                return root
    return None


def _cgroup_v1_dir(root: Path = Path("/sys/fs/cgroup/memory")) -> Path | None:
    return root if (root / "memory.limit_in_bytes").exists() else None


def detect_limit(configured_bytes: int | None = None) -> MemoryLimit:
    """The memory limit: the setting, else cgroup v2/v1, else ``RLIMIT_AS``, else physical memory."""
    if configured_bytes:
        return MemoryLimit(configured_bytes, "setting")
    v2 = _cgroup_v2_dir()
    if v2 is not None and (value := _read_int(v2 / "memory.max")) is not None:
        return MemoryLimit(value, "cgroup_v2")
    v1 = _cgroup_v1_dir()
    if v1 is not None and (value := _read_int(v1 / "memory.limit_in_bytes")) is not None:
        return MemoryLimit(value, "cgroup_v1")
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and 0 < soft < _ABSURD_LIMIT:
        return MemoryLimit(int(soft), "rlimit_as")
    return MemoryLimit(_physical_memory(), "physical")


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * PAGE_SIZE
    except (ValueError, OSError, AttributeError):
        import psutil  # where sysconf cannot tell (not Linux)

        return int(psutil.virtual_memory().total)


def cgroup_memory() -> dict[str, int | str | None]:
    """The container's memory figures, for dumps: version, max, current, anon, file.

    Pressure is judged by ``anon`` (anonymous memory), not ``current``, which counts reclaimable page
    cache. Not for the request path: it reads several files.
    """
    v2 = _cgroup_v2_dir()
    if v2 is not None:
        stat = _read_stat(v2 / "memory.stat")
        return {
            "version": "v2",
            "max": _read_int(v2 / "memory.max"),
            "current": _read_int(v2 / "memory.current"),
            "anon": stat.get("anon"),
            "file": stat.get("file"),
        }
    v1 = _cgroup_v1_dir()
    if v1 is not None:
        stat = _read_stat(v1 / "memory.stat")
        return {
            "version": "v1",
            "max": _read_int(v1 / "memory.limit_in_bytes"),
            "current": _read_int(v1 / "memory.usage_in_bytes"),
            "anon": stat.get("total_rss", stat.get("rss")),
            "file": stat.get("total_cache", stat.get("cache")),
        }
    return {"version": None, "max": None, "current": None, "anon": None, "file": None}


def _read_stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out

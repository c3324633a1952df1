"""Heap readings: the Python heap in use, a figure that memory freed and reused does not hide.

Once a worker's heap has grown, later requests reuse the memory earlier ones freed and RSS hardly moves
(a request building 20,000 ORM objects after a 30,000-object one: RSS -0.2 MiB, tracemalloc 27.5 MiB).
A heap reading counts what is allocated now, wherever it lies:

- ``tracemalloc`` (exact bytes) while Python allocation tracing is on (``PYTHONTRACEMALLOC`` or the app
  started it; memprof never does): a reading costs 1-3 µs, but tracing slows allocation-heavy code 4x;
- otherwise ``allocated_blocks_x96``, an estimate: ``sys.getallocatedblocks()`` (pymalloc blocks in
  use, plus one per allocation over 512 bytes) times 96 bytes. On ORM loads, JSON building and many
  small strings it lands within 0.69-1.24x of tracemalloc's peak on fresh and warm heaps alike; a single
  allocation over 512 bytes counts as one block, so a big string or bytes object is missed here (RSS
  shows it: large allocations get fresh pages from the kernel). See docs/performance.md.

``sys.getallocatedblocks()`` walks every pymalloc pool, so its cost grows with the heap: about 1 µs in a
bare interpreter, 10 µs once FastAPI and SQLAlchemy are imported, 45 µs with 100 MB of small objects,
165 µs with 400 MB (glibc's ``mallinfo2()``, which walks malloc's free lists, takes milliseconds on a
fragmented heap and does not see pymalloc at all). So a reading is shared, like RSS readings but over a
window that scales with its cost: every reading (a request's start and end, checkpoints, SQL statements,
garbage collections; any request, any thread) made less than ``SHARE_FACTOR`` times the last fresh
reading's cost after it reuses it. Heap readings then take at most about 2% of a worker's time whatever
the heap's size, and a figure is at most that window old (0.5 ms where a reading takes 10 µs, 8 ms where
it takes 165 µs, 20 ms at most; never across a start or stop of tracemalloc): what the process allocated
meanwhile shows at the next fresh reading. A request alone in a while (light mode samples one in a
hundred) gets fresh readings, which cost more than those measured in a loop: the walk touches one page per pool, cold in the CPU's caches (see docs/performance.md).
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from memprof.memory import READING_RESOLUTION_NS

BLOCK_BYTES = 96
SOURCE_BLOCKS = f"allocated_blocks_x{BLOCK_BYTES}"
SOURCE_TRACEMALLOC = "tracemalloc"
SHARE_FACTOR = 50
"""A reading is reused for this many times as long as the last fresh one took."""
MAX_SHARE_NS = 20_000_000
"""... but never longer than this: a reading preempted mid-walk on a busy machine says nothing of its cost."""

_perf = time.perf_counter_ns
_is_tracing = tracemalloc.is_tracing
_traced = tracemalloc.get_traced_memory
_blocks = sys.getallocatedblocks

_NEVER = (-(1 << 62), 0, 0, SOURCE_BLOCKS)
# (perf_counter_ns of the reading, bytes, how long it may be shared in ns, source): replaced whole.
_last: tuple[int, int, int, str] = _NEVER


def heap_bytes() -> tuple[int, str]:
    """A fresh reading: (bytes, source). Exact traced bytes while tracing, else the block estimate."""
    if _is_tracing():
        return _traced()[0], SOURCE_TRACEMALLOC
    return _blocks() * BLOCK_BYTES, SOURCE_BLOCKS


def _fresh(now_ns: int) -> int:
    global _last
    t0 = _perf()
    value, source = heap_bytes()
    cost = _perf() - t0
    _last = (now_ns, value, min(max(READING_RESOLUTION_NS, SHARE_FACTOR * cost), MAX_SHARE_NS), source)
    return value


def heap_at(now_ns: int, after_ns: int | None = None) -> int:
    """The heap at ``now_ns`` (``time.perf_counter_ns()``): the last reading, by any request or thread,
    while it is younger than ``SHARE_FACTOR`` times its own cost (at least ``READING_RESOLUTION_NS``),
    else a fresh one. With ``after_ns`` (a span's start), a reading made at or before it is never reused:
    a span's end must not read its own start. A reading from before tracing started or stopped is never
    reused either: its figure is in the other source's units."""
    then, value, window, source = _last
    if (
        0 <= now_ns - then < window
        and (after_ns is None or then > after_ns)
        and (source == SOURCE_TRACEMALLOC) is _is_tracing()
    ):
        return value
    return _fresh(now_ns)


def heap_source() -> str:
    """The source of the last reading: ``tracemalloc`` or ``allocated_blocks_x96`` (an estimate)."""
    return _last[3]


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): the parent's last reading is not the child's."""
    global _last
    _last = _NEVER

"""The record writer: a bounded queue drained by a background thread into rotated JSON Lines files.

The request path only calls :meth:`RecordWriter.submit`, which never blocks: when the queue is full the
record is dropped and counted. Submitting is a deque append and nothing else (no lock, no system call):
the thread is not woken per record (a wake-up per record cost the request path 3-8 µs in futex calls and
GIL hand-offs, see docs/performance.md); it drains the queue every ``WAKE_INTERVAL_S``, at once when the
queue is a quarter full, and on :meth:`RecordWriter.flush`, which waits until the queue is empty and the
thread idle. A forked child gets a fresh writer from :mod:`memprof.forksafe`. The thread turns each item into a record, appends it to
``samples-<pid>-<start>-<seq>.jsonl`` in the data dir, rotates the file by size, keeps the total size
of samples files under a cap (oldest removed first) and emits the structlog event for it.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from memprof import logs as log
from memprof.files import open_private_append
from memprof.safety.isolation import internal_error

SAMPLES_GLOB = "samples-*.jsonl"
WAKE_INTERVAL_S = 0.05
_STOP = object()

RecordBuilder = Callable[[Any], dict[str, Any] | None]
RecordSink = Callable[[dict[str, Any]], None]

# Called in the writer thread with every record written (after its line and its structlog event):
# exporters (OpenTelemetry metrics) whose cost must stay off the request path.
SINKS: list[RecordSink] = []


def register_sink(sink: RecordSink) -> None:
    """Have ``sink(record)`` called in the writer thread for every record written (idempotent, guarded)."""
    if sink not in SINKS:
        SINKS.append(sink)


def unregister_sink(sink: RecordSink) -> None:
    """Stop calling ``sink``."""
    if sink in SINKS:
        SINKS.remove(sink)


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON Lines line (UTF-8, compact, newline-terminated). orjson takes ~1 µs where the standard
    library's encoder takes ~13 µs for a sample record; what orjson refuses (an integer beyond 64 bits in
    a recorded parameter, say) goes through the standard library. Anything else becomes its ``str``."""
    try:
        return orjson.dumps(record, default=str, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


class RecordWriter:
    """Writes records from a bounded queue on a daemon thread. One per runtime (per data dir)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_file_bytes: int,
        max_total_bytes: int,
        queue_size: int,
        log_events: bool = True,
        event_name: str = "memprof.request.completed",
    ) -> None:
        self.data_dir = data_dir
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.queue_size = queue_size
        self.log_events = log_events
        self.event_name = event_name
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._reset()
        _WRITERS.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._wake_at = max(1, self.queue_size // 4)
        self._thread: threading.Thread | None = None
        self._file: BinaryIO | None = None
        self._file_path: Path | None = None
        self._file_bytes = 0
        self._seq = 0
        self._pid = os.getpid()
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        # True from before the thread takes an item until the queue is empty after it: with the queue,
        # what flush() waits on. Notified through ``_idle`` when the thread goes idle.
        self._busy = False
        self._idle = threading.Condition(threading.Lock())

    def reinit_after_fork(self) -> None:
        """In a forked child (see :mod:`memprof.forksafe`): a fresh lock, queue and thread, and its own
        samples file under the child's pid. The inherited copy of the parent's file may hold buffered
        lines: its descriptor is pointed at /dev/null so that flushing that copy duplicates nothing."""
        if self._file is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._file.fileno())
            finally:
                os.close(devnull)
        self._lock = threading.Lock()
        self._reset()

    def submit(self, item: Any, build: RecordBuilder) -> bool:
        """Queue ``item``; the writer thread calls ``build(item)`` to get the record. Never blocks."""
        if self._thread is None:
            self._start()
        queued = self._queue
        n = len(queued)
        if n >= self.queue_size:
            self.dropped += 1
            return False
        queued.append((item, build))
        if n + 1 == self._wake_at:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Records queued or being written."""
        return len(self._queue) + self._busy

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="memprof-writer", daemon=True)
                thread.start()
                self._thread = thread

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (or ``timeout`` seconds). True when drained."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._thread is None and self._queue):
                    return False
                self._wake.set()
                # Notified when the thread goes idle; the slice bounds a wait on a submit racing it.
                self._idle.wait(min(remaining, WAKE_INTERVAL_S))
        if self._file is not None:
            with self._lock:
                if self._file is not None:
                    self._file.flush()
        return True

    def _run(self) -> None:
        queued, wake = self._queue, self._wake
        while True:
            if not queued:
                wake.wait(WAKE_INTERVAL_S)
                wake.clear()
                continue
            self._busy = True  # before the pop: flush() never sees an empty queue and an idle thread early
            entry = queued.popleft()
            if entry is _STOP:
                self._idle_now()
                return
            item, build = entry
            try:
                record = build(item)
                if record is not None:
                    self._write(record)
            except Exception as exc:
                self.failed += 1
                try:
                    internal_error("writer", exc)
                except Exception:
                    pass  # the test switch re-raises; the thread must live on to drain the queue
            finally:
                # Drop this item before waiting for the next: its profile (and the runtime behind
                # ``build``) must not stay alive as long as the queue is idle.
                entry = item = build = record = None
                if not queued:
                    self._idle_now()

    def _idle_now(self) -> None:
        with self._idle:
            self._busy = False
            self._idle.notify_all()

    def _write(self, record: dict[str, Any]) -> None:
        line = encode_line(record)
        with self._lock:
            if self._file is None or self._file_bytes + len(line) > self.max_file_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(line)
            if not self._queue:
                self._file.flush()
            self._file_bytes += len(line)
        self.written += 1
        if self.log_events:
            log.info(self.event_name, **record)
        for sink in SINKS:
            try:
                sink(record)
            except Exception as exc:
                internal_error(f"sink:{getattr(sink, '__name__', sink)}", exc)

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._seq += 1
        path = self.data_dir / f"samples-{self._started}-{self._pid}-{self._seq:04d}.jsonl"
        fd = open_private_append(path)
        self._file = os.fdopen(fd, "ab")
        self._file_path = path
        self._file_bytes = 0
        self._enforce_total(keep=path)

    def _enforce_total(self, keep: Path) -> None:
        files = []
        for p in self.data_dir.glob(SAMPLES_GLOB):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, p.name, p, st.st_size))
        total = sum(f[3] for f in files)
        for _mtime, _name, path, size in sorted(files):
            if total <= self.max_total_bytes:
                break
            if path == keep:
                continue
            try:
                path.unlink()
                total -= size
            except OSError:
                pass

    @property
    def current_file(self) -> Path | None:
        """The samples file being appended to, if one is open."""
        return self._file_path

    def close(self, timeout: float = 5.0) -> None:
        """Drain the queue, stop the thread and close the file."""
        self.flush(timeout)
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.append(_STOP)
            self._wake.set()
            thread.join(timeout)
        self._thread = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


_WRITERS: weakref.WeakSet[RecordWriter] = weakref.WeakSet()


def writers() -> list[RecordWriter]:
    """Every live writer in this process."""
    return list(_WRITERS)


def flush(timeout: float = 5.0) -> bool:
    """Write out every queued record of every memprof writer in this process. True when all drained."""
    deadline = time.monotonic() + timeout
    ok = True
    for writer in list(_WRITERS):
        ok = writer.flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    try:
        flush(2.0)
    except Exception:
        pass

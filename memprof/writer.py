"""The record writer: a bounded queue drained by a background thread into rotated JSON Lines files.

The request path only calls :meth:`RecordWriter.submit`, which never blocks: when the queue is full the
record is dropped and counted. Submitting is a deque append and nothing else (no lock, no system call):
the thread is not woken per record (a wake-up per record cost the request path 3-8 µs in futex calls and
GIL hand-offs, see docs/performance.md); it drains the queue every ``WAKE_INTERVAL_S``, at once when the
queue is a quarter full, and on :meth:`RecordWriter.flush`, which waits until the queue is empty and the
thread idle. A forked child gets a fresh writer from :mod:`memprof.forksafe`. The thread turns each item
into a record and appends it to ``samples-<start>-<host>-<pid>-<seq>.jsonl`` in the data dir (see
:mod:`memprof.sample_files`): lines are gathered into a batch written with one ``write`` when the queue is
empty (or the batch is large), and a record counts as written only once its whole line is in the file. A
failed write (a full disk) is cut back off the file, so no torn line is left, and its records are counted
as dropped. The file is rotated by size, the total size of samples files is capped (the writer removes
only its own closed files and those of workers that are gone), and each record written is emitted as a
log event and handed to the sinks.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from memprof import logs as log
from memprof.files import open_private_append
from memprof.safety.isolation import internal_error
from memprof.safety.redaction import redact_text
from memprof.sample_files import SAMPLES_GLOB, STAMP, enforce_total, sample_file_name

__all__ = ["SAMPLES_GLOB", "RecordWriter", "encode_line", "flush", "register_sink", "unregister_sink"]

WAKE_INTERVAL_S = 0.05
BATCH_BYTES = 64 * 1024  # lines gathered before one write, when the queue does not empty sooner
_STOP = object()

RecordBuilder = Callable[[Any], dict[str, Any] | None]
RecordSink = Callable[[dict[str, Any]], None]

# Called in the writer thread with every record written (after its line and its log event):
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
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._reset()
        _WRITERS.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._wake_at = max(1, self.queue_size // 4)
        self._thread: threading.Thread | None = None
        # The counts (a forked child starts its own: the parent's records are the parent's).
        self.written = 0  # records whose whole line is in a file
        self.dropped = 0  # the queue was full (counted on the request path)
        self.write_failed = 0  # the write failed (a full disk, the data dir gone or read-only)
        self.build_failed = 0  # building the record raised
        self.removed = {"files": 0, "records": 0, "bytes": 0}  # by the size cap, any worker's files
        self.last_error: str | None = None
        self._fd: int | None = None
        self._file_path: Path | None = None
        self._file_bytes = 0  # bytes of whole lines in the current file
        self._records: dict[Path, int] = {}  # this writer's files still on disk -> records in each
        self._batch: list[tuple[bytes, dict[str, Any]]] = []
        self._batch_bytes = 0
        self._seq = 0
        self._pid = os.getpid()
        self._started = time.strftime(STAMP, time.gmtime())
        # True from before the thread takes an item until the queue is empty after it: with the queue,
        # what flush() waits on. Notified through ``_idle`` when the thread goes idle.
        self._busy = False
        self._idle = threading.Condition(threading.Lock())

    def reinit_after_fork(self) -> None:
        """In a forked child (see :mod:`memprof.forksafe`): a fresh lock, queue and thread, and its own
        samples file under the child's pid. Lines the parent had gathered but not written stay the
        parent's (the child's batch starts empty); the inherited descriptor of the parent's file is
        closed."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
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
                self._flush_pending()
                self._idle_now()
                return
            item, build = entry
            try:
                try:
                    record = build(item)
                except Exception:
                    self.build_failed += 1
                    raise
                if record is not None:
                    self._write(record)
            except Exception as exc:
                try:
                    internal_error("writer", exc)
                except Exception:
                    pass  # the test switch re-raises; the thread must live on to drain the queue
            finally:
                # Drop this item before waiting for the next: its profile (and the runtime behind
                # ``build``) must not stay alive as long as the queue is idle.
                entry = item = build = record = None
                if not queued:
                    self._flush_pending()
                    self._idle_now()

    def _idle_now(self) -> None:
        with self._idle:
            self._busy = False
            self._idle.notify_all()

    def _write(self, record: dict[str, Any]) -> None:
        """Gather the record's line; write the batch when it is large or the file must rotate (the
        thread writes it too whenever the queue is empty, see :meth:`_flush_pending`)."""
        line = encode_line(record)
        written: list[dict[str, Any]] = []
        error: OSError | None = None
        with self._lock:
            if self._file_bytes + self._batch_bytes + len(line) > self.max_file_bytes:
                if self._batch:
                    written, error = self._write_batch()
                if self._file_bytes:  # an empty file (its writes failed) is kept: no empty files
                    self._close_file()
            self._batch.append((line, record))
            self._batch_bytes += len(line)
            if self._batch_bytes >= BATCH_BYTES:
                more, later = self._write_batch()
                written += more
                error = error or later
        self._emit(written)
        if error is not None:
            _write_failed(error)

    def _flush_pending(self) -> None:
        """Write the gathered lines now (the queue is empty). A failure is reported, never raised."""
        with self._lock:
            written, error = self._write_batch()
        self._emit(written)
        if error is not None:
            _write_failed(error)

    def _write_batch(self) -> tuple[list[dict[str, Any]], OSError | None]:
        """Append the batch to the current file (opened if needed) with one write; return its records
        once the whole batch is in the file. On failure nothing of it stays in the file, its records are
        counted as dropped (``write_failed``) and the error is returned. Called with the lock held."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return [], None
        try:
            if self._fd is None:
                self._open_next()
            assert self._fd is not None and self._file_path is not None
            view = memoryview(b"".join(line for line, _ in batch))
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.write_failed += len(batch)
            self._cut_back()
            self.last_error = redact_text(f"{type(exc).__name__}: {exc}")
            return [], exc
        self._file_bytes += sum(len(line) for line, _ in batch)
        self._records[self._file_path] = self._records.get(self._file_path, 0) + len(batch)
        self.written += len(batch)
        return [record for _, record in batch], None

    def _cut_back(self) -> None:
        """After a failed write: truncate the file to its whole lines (a torn line would merge with the
        next one); if even that fails, leave the file so the next write opens a new one."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._file_bytes)
        except OSError:
            self._close_file()

    def _emit(self, records: list[dict[str, Any]]) -> None:
        """The log event and the sinks of records written (guarded, never raising)."""
        for record in records:
            if self.log_events:
                log.info(self.event_name, **record)
            for sink in SINKS:
                try:
                    sink(record)
                except Exception as exc:
                    internal_error(f"sink:{getattr(sink, '__name__', sink)}", exc, background=True)

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        self._file_bytes = 0
        if fd is not None:
            os.close(fd)

    def _open_next(self) -> None:
        """Open the next samples file, then keep the data dir under the total cap."""
        path = self.data_dir / sample_file_name(self._started, self.host, self._pid, self._seq + 1)
        self._fd = open_private_append(path)
        self._seq += 1
        self._file_path = path
        self._file_bytes = 0
        self._records.setdefault(path, 0)
        try:
            self._enforce_total()
        except OSError as exc:  # the cap is kept at the next rotation; the records still go in
            internal_error("writer_retention", exc, background=True)

    def _enforce_total(self) -> None:
        own_closed = {p: n for p, n in self._records.items() if p != self._file_path}
        removal, removed = enforce_total(
            self.data_dir, self.max_total_bytes, host=self.host, own_closed=own_closed
        )
        for path in removed:
            self._records.pop(path, None)
        self.removed["files"] += removal.files
        self.removed["records"] += removal.records
        self.removed["bytes"] += removal.bytes

    def counts(self) -> dict[str, Any]:
        """Written, dropped (by reason), removed by the size cap, pending, and the last write error."""
        return {
            "written": self.written,
            "pending": self.pending,
            "dropped": {
                "queue_full": self.dropped,
                "write_failed": self.write_failed,
                "build_failed": self.build_failed,
            },
            "removed": dict(self.removed),
            "last_error": self.last_error,
        }

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
            written, _error = self._write_batch()  # (empty unless the thread never wrote it)
            if self._fd is not None and self._file_bytes == 0 and self._file_path is not None:
                self._file_path.unlink(missing_ok=True)  # a file whose every write failed
                self._records.pop(self._file_path, None)
            self._close_file()
        self._emit(written)


def _write_failed(error: OSError) -> None:
    # The disk's failure, not the request path's: counted (with the records, as write_failed) and
    # reported for its place, never pausing profiling. Each batch tries again: a failed write is cheap.
    internal_error("writer_io", error, background=True)


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

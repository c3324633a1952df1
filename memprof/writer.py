"""The record writer: a bounded queue drained on memprof's background thread into rotated JSON Lines files.

The request path only calls :meth:`RecordWriter.submit`, which never blocks: a deque append and nothing
else (no lock, no system call; a full queue drops the record and counts it). The thread is not woken per
record (that cost the request path 3-8 µs, see docs/performance.md): each writer is a job of
:mod:`memprof.background` that drains its queue every ``WAKE_INTERVAL_S``, at once when it is a quarter
full, and on :meth:`RecordWriter.flush` (which waits at most its timeout). A forked child gets a fresh
writer from :mod:`memprof.forksafe`. Records go to ``samples-<start>-<host>-<pid>-<seq>.jsonl`` (see
:mod:`memprof.sample_files`) in batches, one ``write`` each when the queue is empty or the batch is
large; a record counts as written only once its whole line is in the file. A failed write (a full disk)
is cut back off the file, so no torn line is left, and its records are counted as dropped. Files rotate
by size, their total size is capped (the writer removes only its own closed files and those of workers
that are gone), and each record written is emitted as a log event and handed to the sinks.
"""

from __future__ import annotations

import atexit
import collections
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memprof import logs as log
from memprof.background import BACKGROUND, acquire, timed_out
from memprof.files import open_private_append
from memprof.safety.isolation import internal_error
from memprof.safety.redaction import redact_text
from memprof.sample_files import SAMPLES_GLOB, STAMP, encode_line, enforce_total, sample_file_name
from memprof.sinks import SINKS, register_sink, unregister_sink

__all__ = ["SAMPLES_GLOB", "RecordWriter", "encode_line", "flush", "register_sink", "unregister_sink"]

WAKE_INTERVAL_S = 0.05
# A round of draining stops after this long (its records written, their events and sinks waiting) and lets
# the background thread's other jobs (the watchdog) have their turn: a slow log handler must not hold them.
DRAIN_ROUND_S = 0.05
BATCH_BYTES = 64 * 1024  # lines gathered before one write, when the queue does not empty sooner

RecordBuilder = Callable[[Any], dict[str, Any] | None]


class RecordWriter:
    """Writes records from a bounded queue on the background thread. One per runtime (per data dir)."""

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
        self._wake_at = max(1, self.queue_size // 4)
        self._scheduled = False  # a job of the background thread
        self._closed = False
        self._asap = False  # drain at the thread's next look, not at the next interval
        self._next = 0.0
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
        self._unemitted: collections.deque[dict[str, Any]] = collections.deque()  # written, events not yet
        self._seq = 0
        self._pid = os.getpid()
        self._started = time.strftime(STAMP, time.gmtime())
        # True from before the thread takes an item until the queue is empty after it: with the queue,
        # what flush() waits on. Notified through ``_idle`` when the thread goes idle.
        self._busy = False
        self._idle = threading.Condition(threading.Lock())

    def reinit_after_fork(self) -> None:
        """In a forked child (see :mod:`memprof.forksafe`): a fresh lock and queue, no job, and its own
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
        """Queue ``item``; the background thread calls ``build(item)`` to get the record. Never blocks."""
        if not self._scheduled:
            self._schedule()
        queued = self._queue
        n = len(queued)
        if n >= self.queue_size:
            self.dropped += 1
            return False
        queued.append((item, build))
        if n + 1 == self._wake_at:
            self._asap = True
            BACKGROUND.wake()
        return True

    @property
    def pending(self) -> int:
        """Records queued or being written."""
        return len(self._queue) + self._busy

    def _schedule(self) -> None:
        self._closed = False
        self._scheduled = True
        BACKGROUND.add(self)

    # -- the background thread's job --------------------------------------------------------------
    def due(self) -> float | None:
        """When the queue is drained next (see :class:`memprof.background.Job`)."""
        if self._closed:
            return None
        return 0.0 if self._asap else self._next

    def run(self) -> None:
        """Drain the queue (one round of the job, at most about DRAIN_ROUND_S)."""
        self._asap = False
        self._next = time.monotonic() + WAKE_INTERVAL_S
        self._drain(time.monotonic() + DRAIN_ROUND_S)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (or ``timeout`` seconds). True when drained."""
        if BACKGROUND.in_thread():  # a job flushing: drain here, never wait for this very thread
            self._drain()
            return not self._queue
        deadline = time.monotonic() + timeout
        if not acquire(self._idle, timeout, "records to be written"):
            return False
        try:
            while self._queue or self._busy or self._unemitted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._scheduled and self._queue):
                    if remaining <= 0:
                        timed_out("records to be written")
                    return False
                self._asap = True
                BACKGROUND.wake()
                # Notified when the thread goes idle; the slice bounds a wait on a submit racing it.
                self._idle.wait(min(remaining, WAKE_INTERVAL_S))
        finally:
            self._idle.release()
        return True

    def _drain(self, deadline: float | None = None) -> None:
        queued = self._queue
        if not queued and not self._unemitted:
            return
        # Within a round's deadline, and never past records whose events wait (that queue stays bounded).
        while queued and not self._closed and not self._over(deadline):
            self._busy = True  # before the pop: flush() never sees an empty queue and an idle thread early
            item, build = queued.popleft()
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
                    pass  # the test switch re-raises; the queue must still be drained
            finally:
                # Drop this item before the next: its profile (and the runtime behind ``build``) must
                # not stay alive as long as the queue is idle.
                item = build = record = None
        self._flush_pending()
        self._emit_due(deadline)
        if queued or self._unemitted:
            self._asap = True  # the rest right after the other jobs' turn
        with self._idle:
            self._busy = False
            self._idle.notify_all()

    def _write(self, record: dict[str, Any]) -> None:
        """Gather the record's line; write the batch when it is large or the file must rotate (the
        job writes it too whenever the queue is empty, see :meth:`_flush_pending`)."""
        line = encode_line(record)
        written: list[dict[str, Any]] = []
        error: OSError | None = None
        with self._lock:
            if self._closed:  # closed meanwhile (close() gave up waiting): the file is not reopened
                self.write_failed += 1
                self.last_error = "the writer was closed (shutdown) before the record was written"
                return
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

    def _over(self, deadline: float | None) -> bool:
        return deadline is not None and (bool(self._unemitted) or time.monotonic() > deadline)

    def _emit(self, records: list[dict[str, Any]]) -> None:
        """Records written: their log events and sinks follow (:meth:`_emit_due`)."""
        self._unemitted.extend(records)

    def _emit_due(self, deadline: float | None) -> None:
        """The log event and the sinks of records written, until ``deadline`` (guarded, never raising)."""
        while self._unemitted and (deadline is None or time.monotonic() <= deadline):
            record = self._unemitted.popleft()
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
        """Drain the queue (at most ``timeout`` seconds), leave the background thread, close the file."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._closed = True
        self._scheduled = False
        BACKGROUND.remove(self)
        if not acquire(self._lock, max(0.0, deadline - time.monotonic()), "the samples file"):
            return
        try:
            written, _error = self._write_batch()  # (empty unless the job never wrote it)
            if self._fd is not None and self._file_bytes == 0 and self._file_path is not None:
                self._file_path.unlink(missing_ok=True)  # a file whose every write failed
                self._records.pop(self._file_path, None)
            self._close_file()
        finally:
            self._lock.release()
        self._emit(written)
        self._emit_due(None)


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

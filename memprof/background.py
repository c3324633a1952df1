"""memprof's one background thread: the record writers, the watchdog, the control poller and the stop
watch take turns on it.

A thread costs a process more than its work: glibc gives each thread that allocates its own malloc arena,
64 MiB of address space reserved on 64-bit Linux, plus its stack (8 MiB by default). With a thread per
task memprof took about 225 MB of address space, which an app under an address-space limit
(``RLIMIT_AS``, ``prlimit --as``) then lacked. So every periodic task is a :class:`Job` on one thread
with a :data:`STACK_SIZE` stack (docs/performance.md, "Footprint", has the figures and what
``MALLOC_ARENA_MAX`` changes). A job says when it is due (:meth:`Job.due`) and does one round
(:meth:`Job.run`); :meth:`Background.wake` makes the thread look at once. A slow round (a dump, an
unreachable Redis: at most its 0.25 s timeouts) delays the others; the records' queue absorbs it.

The thread starts with the first job and ends when no job is left. It holds :attr:`Background.gate`
while a job runs, and a fork takes the gate first (:mod:`memprof.forksafe`): a child never inherits a
job half done, unless one ran past :data:`FORK_WAIT_S` (the fork then goes ahead; the child re-creates
every lock anyway).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Protocol

from memprof import logs as log
from memprof.safety.isolation import internal_error

# The thread's stack. 2 MiB holds Python's default recursion limit (1000) even through C frames (1 MiB
# does not: a recursion of 990 through map() overflowed it). ``threading.stack_size`` is process-wide:
# it is set only for the instant of this thread's start and restored at once; a thread another thread
# starts in that instant would get 2 MiB too, which still holds the default recursion limit.
STACK_SIZE = 2 * 1024 * 1024
FORK_WAIT_S = 2.0  # a fork waits at most this long for a job to finish
MAX_SLEEP_S = 1.0
ERROR_BACKOFF_S = 1.0  # a job whose round failed is not run again sooner than this
THREAD_NAME = "memprof-background"


class Job(Protocol):
    """A periodic task of the background thread."""

    def due(self) -> float | None:
        """When to run next (a ``time.monotonic()`` value; now or earlier: at once); None: the job is
        over and leaves the thread (adding it again brings it back)."""

    def run(self) -> None:
        """One round. An exception is counted as a background internal error (``background:<class>``),
        never tripping the circuit breaker."""


_timeouts_logged: set[str] = set()


def timed_out(what: str) -> None:
    """A bounded wait in memprof ran out: log it once per ``what`` (the caller skips the step)."""
    if what not in _timeouts_logged:
        _timeouts_logged.add(what)
        try:
            log.warning("memprof.timeout", waiting_for=what)
        except Exception:  # pragma: no cover - logging must never hurt the app
            pass


def acquire(lock: threading.Lock | threading.RLock | threading.Condition, timeout: float, what: str) -> bool:
    """Take ``lock`` within ``timeout`` seconds; past it, log once (:func:`timed_out`) and return False."""
    if lock.acquire(timeout=max(0.0, timeout)):
        return True
    timed_out(what)
    return False


class Background:
    """The process's background thread and its jobs (held weakly: a job lives as long as its owner)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.jobs: weakref.WeakSet[Job] = weakref.WeakSet()
        self.lock = threading.Lock()  # jobs and thread
        self.gate = threading.Lock()  # held while a job runs; a fork takes it (memprof.forksafe)
        self.event = threading.Event()
        self.thread: threading.Thread | None = None
        self.ident: int | None = None
        self.rounds = 0
        self._forking = False

    def add(self, job: Job) -> None:
        """Run ``job`` on the thread (started if needed). Idempotent."""
        with self.lock:
            self.jobs.add(job)
            if self.thread is None:
                self._start()
        self.event.set()

    def remove(self, job: Job) -> None:
        """Stop running ``job``."""
        with self.lock:
            self.jobs.discard(job)

    def wake(self) -> None:
        """Make the thread ask every job whether it is due, now. Never from a signal handler (a lock)."""
        self.event.set()

    def in_thread(self) -> bool:
        """Whether the caller is the background thread (a job must never wait for the thread)."""
        return threading.get_ident() == self.ident

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        try:
            previous: int | None = threading.stack_size(STACK_SIZE)
        except (ValueError, RuntimeError):  # a platform that cannot set it: the default stack
            previous = None
        try:
            thread.start()
        finally:
            if previous is not None:
                threading.stack_size(previous)
        self.thread = thread

    def _run(self) -> None:
        self.ident = threading.get_ident()
        while True:
            with self.lock:
                # Weak references, resolved one at a time: a job whose owner died meanwhile is skipped.
                refs = [weakref.ref(job) for job in self.jobs]
                if not refs:
                    self.thread = self.ident = None
                    return
            next_at = time.monotonic() + MAX_SLEEP_S
            for ref in refs:
                job = ref()
                if job is None:
                    continue
                at = self._visit(job)
                if at is None:
                    self.remove(job)
                else:
                    next_at = min(next_at, at)
                job = None  # no job stays referenced while the thread sleeps
            self.event.wait(max(0.0, next_at - time.monotonic()))
            self.event.clear()

    def _visit(self, job: Job) -> float | None:
        try:
            at = job.due()
            if at is None or at > time.monotonic():
                return at
            with self.gate:
                job.run()
            self.rounds += 1
            return job.due()
        except Exception as exc:
            try:
                internal_error(f"background:{type(job).__name__}", exc, background=True)
            except Exception:
                pass  # the test switch re-raises; the thread must live on
            return time.monotonic() + ERROR_BACKOFF_S

    # -- fork (see memprof.forksafe) ----------------------------------------------------------------
    def before_fork(self) -> None:
        """In the forking thread: wait (at most FORK_WAIT_S) until no job runs, and keep it so."""
        self._forking = False
        if self.thread is not None and not self.in_thread():
            self._forking = self.gate.acquire(timeout=FORK_WAIT_S)
            if not self._forking:
                timed_out("a background job before fork")

    def after_fork_in_parent(self) -> None:
        """In the parent: jobs run again."""
        if self._forking:
            self._forking = False
            self.gate.release()

    def after_fork_in_child(self) -> None:
        """In the child: no thread, no job, fresh locks; whatever serves there adds its jobs again."""
        self._reset()
        _timeouts_logged.clear()


BACKGROUND = Background()

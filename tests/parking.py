"""A lock that parks memprof's background thread inside a critical section, for fork and shutdown tests."""

from __future__ import annotations

import threading

from memprof.background import BACKGROUND


class ParkingLock:
    """A lock that parks memprof's background thread inside the section it guards: the first time that
    thread holds it, it sets ``parked`` and waits for ``go`` before going on (other threads pass)."""

    def __init__(self) -> None:
        self._real = threading.Lock()
        self.parked = threading.Event()
        self.go = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._real.acquire(blocking, timeout)
        if got and BACKGROUND.in_thread() and not self.parked.is_set():
            self.parked.set()
            self.go.wait(60)
        return got

    def release(self) -> None:
        self._real.release()

    def locked(self) -> bool:
        return self._real.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

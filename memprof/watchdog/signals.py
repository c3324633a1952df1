"""The optional dump signal (``MEMPROF_DUMP_SIGNAL``): a handler that only raises a flag."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType


def install_dump_signal(name: str, on_signal: Callable[[], None]) -> None:
    """Call ``on_signal()`` when signal ``name`` arrives (main thread only), then any previous handler.

    ``on_signal`` runs inside a signal handler: it must take no lock. Installing twice is a no-op.
    """
    signum = getattr(signal, name)
    previous = signal.getsignal(signum)
    if getattr(previous, "_memprof_dump_signal", False):
        return

    def handler(sig: int, frame: FrameType | None) -> None:
        on_signal()
        if callable(previous):
            previous(sig, frame)

    handler._memprof_dump_signal = True  # type: ignore[attr-defined]
    signal.signal(signum, handler)

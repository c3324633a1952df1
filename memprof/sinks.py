"""Record sinks: exporters (OpenTelemetry metrics) handed every record written, off the request path.

The record writer (:mod:`memprof.writer`) calls each sink on memprof's background thread with every record
whose line is in a file, after its log event; a sink's failure is counted as background work's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RecordSink = Callable[[dict[str, Any]], None]

SINKS: list[RecordSink] = []


def register_sink(sink: RecordSink) -> None:
    """Have ``sink(record)`` called on the background thread for every record written (idempotent, guarded)."""
    if sink not in SINKS:
        SINKS.append(sink)


def unregister_sink(sink: RecordSink) -> None:
    """Stop calling ``sink``."""
    if sink in SINKS:
        SINKS.remove(sink)

"""The ``sample`` record of a finished profile: built on the background thread, never on the request path.

Its path and route are redacted here (a raw path may carry a token); see
:class:`memprof.records.models.Sample` for the shape.
"""

from __future__ import annotations

import os
from typing import Any

from memprof.memory import MemoryLimit
from memprof.profile import RequestProfile
from memprof.records.versions import SAMPLE_SCHEMA, SAMPLE_VERSION
from memprof.safety.isolation import internal_error
from memprof.safety.redaction import redact_method, redact_path


def build_sample(profile: RequestProfile, host: str, limit: MemoryLimit) -> dict[str, Any]:
    """The ``sample`` record of ``profile``, measured on ``host`` against ``limit``."""
    checkpoints = []
    for name, ns, rss, heap, extra in profile.checkpoints:
        cp: dict[str, Any] = {"name": name, "ms": round(ns / 1e6, 3), "rss": rss, "heap": heap}
        if extra:
            cp.update(extra)
        checkpoints.append(cp)
    shared = profile.concurrency_max > 1
    path = redact_path(profile.path)
    route = path if profile.route in (None, "", profile.path) else redact_path(profile.route)
    record: dict[str, Any] = {
        "schema": SAMPLE_SCHEMA,
        "version": SAMPLE_VERSION,
        "time": profile.start_time,
        "pid": os.getpid(),
        "host": host,
        "worker": f"{host}:{os.getpid()}",
        "mode": profile.mode,
        "detail": "full" if profile.full else "checkpoints",
        "request": {
            "id": profile.request_id,
            "method": redact_method(profile.method),
            "path": path,
            "route": route,
            "status": profile.status,
            "duration_ms": round(profile.duration_ms, 3),
            "error": profile.error,
        },
        "memory": {
            "limit": limit.bytes,
            "limit_source": limit.source,
            "rss_start": profile.rss_start,
            "rss_end": profile.rss_end,
            "rss_delta": profile.rss_end - profile.rss_start,
            "peak": profile.peak_end,
            "raised_peak": profile.peak_end > profile.peak_start,
            "concurrency": {"at_start": profile.concurrency_start, "max": profile.concurrency_max},
            "shared": shared,
            "heap": profile.heap_record(),
        },
        "checkpoints": checkpoints,
        "dropped_checkpoints": profile.dropped_checkpoints,
        "overhead_ms": round(profile.overhead_ns / 1e6, 4),
    }
    for name, collector in profile.sections.items():
        try:
            record[name] = collector.to_record()
        except Exception as exc:
            internal_error(f"section:{name}", exc)
    return record

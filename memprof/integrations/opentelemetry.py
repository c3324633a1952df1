"""OpenTelemetry export: a profiled request's memory figures on its span, and metrics for fleets.

::

    from memprof.integrations.opentelemetry import instrument_opentelemetry

    instrument_opentelemetry()          # the global MeterProvider; or meter_provider=...

Once instrumented, every profiled request (light, aggressive or targeted; checkpoints-only included)
sets ``memprof.*`` attributes on the current span (the server span of OpenTelemetry's ASGI/FastAPI
instrumentation when that middleware is *outside* memprof's): RSS and the Python heap (start, peak,
end; see :mod:`memprof.heap`) and, from the background thread once its record is written, records its heap
growth (peak - start) and its RSS growth in two histograms.
That middleware ends its span right after the response's last body message, so the span gets the
figures of that moment; when the span is still open once the profile is final (the app raised, or the
span is someone else's), the final figures overwrite them. ``memprof.request_id`` joins a span to its
``sample`` record. Observable gauges report the process RSS, the memory limit memprof works
against and their ratio; counters count critical dumps and guard trips (other parts of memprof call
:func:`record_dump` and :func:`record_guard_trip`, no-ops while OpenTelemetry is not instrumented).

Nothing here imports ``opentelemetry`` until :func:`instrument_opentelemetry` is called, so the rest of
memprof can call the ``record_*`` functions without the ``otel`` extra installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from memprof import events
from memprof.heap import heap_at
from memprof.memory import MemoryLimit, detect_limit, peak_rss_bytes, rss_bytes
from memprof.profile import RequestProfile
from memprof.records.versions import SAMPLE_SCHEMA
from memprof.routes import find_route_template
from memprof.runtime import (
    COMPLETE_HOOKS,
    RESPONSE_END_HOOKS,
    Runtime,
    Scope,
    current_runtime,
    register_hooks,
)
from memprof.safety.isolation import internal_error
from memprof.safety.redaction import redact_path
from memprof.sinks import register_sink, unregister_sink

METER_NAME = "memprof"
# RSS growth of one request, in bytes: 64 KiB .. 1 GiB (the SDK's default buckets are for milliseconds).
GROWTH_BUCKETS = tuple(float(1 << shift) for shift in range(16, 31, 2))

__all__ = [
    "GROWTH_BUCKETS",
    "METER_NAME",
    "instrument_opentelemetry",
    "is_instrumented",
    "record_dump",
    "record_guard_trip",
    "span_attributes",
    "uninstrument_opentelemetry",
]


class _Instruments:
    """The instruments of one :func:`instrument_opentelemetry` call (replaced by the next call)."""

    def __init__(self, meter: Any, *, spans: bool) -> None:
        from opentelemetry import trace
        from opentelemetry.metrics import CallbackOptions, Observation

        self.spans = spans
        self.current_span = trace.get_current_span
        self._limit: MemoryLimit | None = None
        self.heap_growth = meter.create_histogram(
            "memprof.request.heap.growth",
            unit="By",
            description="Python heap growth of a profiled request (highest heap reading minus the one at "
            "request start): what the request allocated at once, which RSS hides once freed memory is reused",
            explicit_bucket_boundaries_advisory=GROWTH_BUCKETS,
        )
        self.growth = meter.create_histogram(
            "memprof.request.memory.growth",
            unit="By",
            description="RSS growth of a profiled request (rss at request end minus at start; shrinking "
            "counts as 0)",
            explicit_bucket_boundaries_advisory=GROWTH_BUCKETS,
        )
        self.dumps = meter.create_counter(
            "memprof.dumps", unit="{dump}", description="Critical state dumps written by memprof"
        )
        self.guard_trips = meter.create_counter(
            "memprof.guard.trips",
            unit="{trip}",
            description="Times a memprof safety guard (circuit breaker, overhead, memory, kill switch) tripped",
        )

        def observe_rss(options: CallbackOptions) -> Iterable[Observation]:
            return self._observe(lambda limit: Observation(rss_bytes()))

        def observe_limit(options: CallbackOptions) -> Iterable[Observation]:
            return self._observe(
                lambda limit: (
                    Observation(limit.bytes, {"memprof.limit_source": limit.source}) if limit.bytes else None
                )
            )

        def observe_utilization(options: CallbackOptions) -> Iterable[Observation]:
            return self._observe(
                lambda limit: Observation(rss_bytes() / limit.bytes) if limit.bytes else None
            )

        meter.create_observable_gauge(
            "memprof.process.memory.rss", [observe_rss], unit="By", description="Resident set size"
        )
        meter.create_observable_gauge(
            "memprof.process.memory.limit",
            [observe_limit],
            unit="By",
            description="The memory limit memprof measures against (cgroup, RLIMIT_AS, physical memory or "
            "MEMPROF_MEMORY_LIMIT_MB)",
        )
        meter.create_observable_gauge(
            "memprof.process.memory.utilization",
            [observe_utilization],
            unit="1",
            description="Resident set size as a fraction of the memory limit",
        )

    def _observe(self, make: Any) -> list[Any]:
        # Gauge callbacks run in the metric reader's thread: guarded, and silent once replaced.
        if _state is not self:
            return []
        try:
            observation = make(self.limit())
            return [] if observation is None else [observation]
        except Exception as exc:
            internal_error("otel_gauge", exc)
            return []

    def limit(self) -> MemoryLimit:
        runtime = current_runtime()
        if runtime is not None:
            return runtime.limit
        if self._limit is None:
            self._limit = detect_limit(None)
        return self._limit


_state: _Instruments | None = None


def instrument_opentelemetry(*, meter_provider: Any = None, span_attributes: bool = True) -> None:
    """Export memprof's figures through OpenTelemetry (needs ``pip install 'memprof[otel]'``).

    ``meter_provider``: where the instruments are created (default: the global one, as set by
    ``opentelemetry.metrics.set_meter_provider`` or the OpenTelemetry distro). ``span_attributes``: set
    the ``memprof.*`` attributes on the current span of each profiled request. Calling it again replaces
    the previous instruments; :func:`uninstrument_opentelemetry` stops the export.
    """
    global _state
    try:
        from opentelemetry import metrics
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "memprof's OpenTelemetry export needs the otel extra: pip install 'memprof[otel]'"
        ) from exc
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    from memprof import __version__

    _state = _Instruments(provider.get_meter(METER_NAME, __version__), spans=span_attributes)
    register_hooks(on_response_end=_on_response_end, on_complete=_on_complete)
    register_sink(_on_record)
    events.on_guard_trip(record_guard_trip)
    events.on_dump_written(record_dump)


def uninstrument_opentelemetry() -> None:
    """Stop exporting: no more span attributes, histogram points, gauge observations or counts."""
    global _state
    _state = None
    for hooks, hook in ((RESPONSE_END_HOOKS, _on_response_end), (COMPLETE_HOOKS, _on_complete)):
        if hook in hooks:
            hooks.remove(hook)
    unregister_sink(_on_record)
    events.remove_listener(record_guard_trip)
    events.remove_listener(record_dump)


def is_instrumented() -> bool:
    """Whether :func:`instrument_opentelemetry` is in force."""
    return _state is not None


def record_dump(trigger: str = "threshold") -> None:
    """Count one critical dump (``trigger``: threshold, custom, manual, memory_error, signal).

    A no-op when OpenTelemetry is not instrumented; never raises.
    """
    state = _state
    if state is None:
        return
    try:
        state.dumps.add(1, {"memprof.trigger": trigger})
    except Exception as exc:
        internal_error("otel_dump", exc)


def record_guard_trip(kind: str) -> None:
    """Count one safety guard trip (``kind``: circuit_breaker, overhead, memory, kill_switch, ...).

    A no-op when OpenTelemetry is not instrumented; never raises.
    """
    state = _state
    if state is None:
        return
    try:
        state.guard_trips.add(1, {"memprof.guard": kind})
    except Exception as exc:
        internal_error("otel_guard_trip", exc)


def span_attributes(
    profile: RequestProfile,
    runtime: Runtime,
    *,
    rss_end: int,
    peak: int,
    route: str,
    heap_end: int | None = None,
) -> dict[str, Any]:
    """The ``memprof.*`` span attributes of a profile, with the end figures given (plain values only).

    ``heap_end``: the heap reading at the end (default: the profile's); no heap attributes when the heap
    source changed during the request (tracing turned on or off)."""
    attributes: dict[str, Any] = {
        "memprof.request_id": profile.request_id,
        "memprof.mode": str(profile.mode),
        "memprof.detail": "full" if profile.full else "checkpoints",
        "memprof.route": route,
        "memprof.rss_start": profile.rss_start,
        "memprof.rss_end": rss_end,
        "memprof.rss_delta": rss_end - profile.rss_start,
        "memprof.peak": peak,
        "memprof.raised_peak": peak > profile.peak_start,
        "memprof.concurrency_max": profile.concurrency_max,
        "memprof.overhead_ms": round(profile.overhead_ns / 1e6, 4),
    }
    if profile.heap_source is not None:
        heap = profile.heap_end if heap_end is None else heap_end
        attributes["memprof.heap_start"] = profile.heap_start
        attributes["memprof.heap_peak"] = max(profile.heap_peak, heap)
        attributes["memprof.heap_end"] = heap
        attributes["memprof.heap_source"] = profile.heap_source
    if runtime.limit.bytes:
        attributes["memprof.limit"] = runtime.limit.bytes
    if profile.error is not None:
        attributes["memprof.error"] = profile.error
    return attributes


def _on_response_end(profile: RequestProfile, runtime: Runtime, scope: Scope) -> None:
    # OpenTelemetry's ASGI middleware ends its server span right after the last body message: this is
    # the last moment the span takes attributes. The figures are those of the response's end.
    state = _state
    if state is None or not state.spans:
        return
    span = state.current_span()
    if not span.is_recording():
        return
    name, _ns, rss, heap, _extra = profile.checkpoints[-1]
    if name != "response_end":  # the checkpoint cap was reached
        rss = rss_bytes()
        heap = heap_at(time.perf_counter_ns())
    peak = max(peak_rss_bytes(), rss, profile.peak_start)
    span.set_attributes(
        span_attributes(
            profile, runtime, rss_end=rss, peak=peak, route=redact_path(_route(profile, scope)), heap_end=heap
        )
    )


def _route(profile: RequestProfile, scope: Scope) -> str:
    """The request's template, found once (the request's end uses it too)."""
    if profile.route is None:
        profile.route = find_route_template(scope)
    return profile.route


def _on_complete(profile: RequestProfile, runtime: Runtime, scope: Scope) -> None:
    state = _state
    if state is None or not state.spans:
        return
    # Still open when the app raised, sent no complete response, or the span is not ASGI's.
    span = state.current_span()
    if span.is_recording():
        route = redact_path(profile.route or profile.path)  # a raw path (no router) may carry a token
        span.set_attributes(
            span_attributes(profile, runtime, rss_end=profile.rss_end, peak=profile.peak_end, route=route)
        )


def _on_record(record: dict[str, Any]) -> None:
    # In the writer thread: a histogram point costs the OpenTelemetry SDK ~6 µs, kept off the request path.
    state = _state
    if state is None or record.get("schema") != SAMPLE_SCHEMA:
        return
    memory = record["memory"]
    attributes = {"http.route": str(record["request"]["route"]), "memprof.mode": str(record["mode"])}
    state.growth.record(max(0, int(memory["rss_delta"])), attributes)
    heap = memory.get("heap")
    if heap is not None:
        state.heap_growth.record(max(0, int(heap["peak"]) - int(heap["start"])), attributes)

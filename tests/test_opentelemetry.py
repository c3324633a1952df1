"""OpenTelemetry export through real apps: OpenTelemetry's ASGI middleware outside MemprofMiddleware,
the SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import memprof
from memprof import MemprofMiddleware
from memprof.integrations import opentelemetry as otel
from memprof.memory import rss_bytes
from memprof.safety.isolation import errors as internal_errors
from tests.apps import fastapi_app, starlette_app

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


class Otel:
    """An SDK tracer provider and meter provider recording in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is SpanKind.SERVER]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def wrap(self, app: Any) -> Any:
        return OpenTelemetryMiddleware(
            app, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )


@pytest.fixture
def otel_sdk() -> Iterator[Otel]:
    sdk = Otel()
    otel.instrument_opentelemetry(meter_provider=sdk.meter_provider)
    yield sdk
    otel.uninstrument_opentelemetry()
    sdk.meter_provider.shutdown()
    sdk.tracer_provider.shutdown()


async def _get(app: Any, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return [await client.get(path) for path in paths]


def _memprof_attrs(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if k.startswith("memprof.")}


async def test_span_carries_the_request_memory_figures(
    otel_sdk: Otel, make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    settings = make_settings(mode="light", sample_rate=1.0)
    app = otel_sdk.wrap(MemprofMiddleware(starlette_app(), settings=settings))

    (response,) = await _get(app, "/users/7")

    assert response.status_code == 200
    (span,) = otel_sdk.server_spans()
    attrs = _memprof_attrs(span)
    (record,) = samples()
    memory = record["memory"]
    assert attrs["memprof.request_id"] == record["request"]["id"]
    assert attrs["memprof.route"] == record["request"]["route"] == "/users/{user_id}"
    assert attrs["memprof.mode"] == "light"
    assert attrs["memprof.detail"] == "checkpoints"
    # the figures are those of the response's end: the span ends right after the last body message
    response_end = {cp["name"]: cp for cp in record["checkpoints"]}["response_end"]["rss"]
    assert attrs["memprof.rss_start"] == memory["rss_start"] > 0
    assert attrs["memprof.rss_end"] == response_end > 0
    assert attrs["memprof.rss_delta"] == response_end - memory["rss_start"]
    assert response_end <= attrs["memprof.peak"] <= memory["peak"]
    assert attrs["memprof.raised_peak"] <= memory["raised_peak"]
    assert attrs["memprof.limit"] == memory["limit"]
    assert attrs["memprof.concurrency_max"] == 1
    # the Python heap beside RSS: start as recorded, end as read at the response's end
    heap = memory["heap"]
    response_end_heap = {cp["name"]: cp for cp in record["checkpoints"]}["response_end"]["heap"]
    assert attrs["memprof.heap_start"] == heap["start"] > 0
    assert attrs["memprof.heap_end"] == response_end_heap > 0
    assert max(heap["start"], response_end_heap) <= attrs["memprof.heap_peak"] <= heap["peak"]
    assert attrs["memprof.heap_source"] == heap["source"] == "allocated_blocks_x96"
    assert 0 < attrs["memprof.overhead_ms"] <= record["overhead_ms"] + 1e-3
    assert "memprof.error" not in attrs
    # the ASGI instrumentation's own attributes are untouched
    assert span.attributes is not None and span.attributes.get("http.status_code") == 200


async def test_fastapi_aggressive_request_and_app_error(
    otel_sdk: Otel, make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    app = fastapi_app()
    app.add_middleware(MemprofMiddleware, settings=make_settings(mode="aggressive"))
    # added last, so outermost: its server span is current while memprof finishes the request
    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=otel_sdk.tracer_provider,
        meter_provider=otel_sdk.meter_provider,
    )

    ok, failed = await _get(app, "/users/3", "/boom")

    assert (ok.status_code, failed.status_code) == (200, 500)
    by_route = {_memprof_attrs(s)["memprof.route"]: s for s in otel_sdk.server_spans()}
    assert set(by_route) == {"/users/{user_id}", "/boom"}
    boom = _memprof_attrs(by_route["/boom"])
    assert boom["memprof.detail"] == "full"
    assert boom["memprof.error"] == "AppError"
    # no response left the app: the span was still open when the profile was final
    (boom_record,) = [r for r in samples() if r["request"]["route"] == "/boom"]
    assert boom["memprof.rss_end"] == boom_record["memory"]["rss_end"]
    assert boom["memprof.peak"] == boom_record["memory"]["peak"]
    assert boom["memprof.heap_end"] == boom_record["memory"]["heap"]["end"]
    assert boom["memprof.heap_peak"] == boom_record["memory"]["heap"]["peak"]
    assert {e.name for e in by_route["/boom"].events} == {"exception"}  # OTel still saw the exception
    ids = {r["request"]["id"] for r in samples()}
    assert {_memprof_attrs(s)["memprof.request_id"] for s in by_route.values()} == ids


async def test_streaming_response_gets_the_figures_of_its_last_chunk(
    otel_sdk: Otel, make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    app = otel_sdk.wrap(
        MemprofMiddleware(starlette_app(), settings=make_settings(mode="light", sample_rate=1))
    )

    (response,) = await _get(app, "/stream")

    assert response.text == "".join(f"chunk{i}\n" for i in range(5))
    (span,) = otel_sdk.server_spans()
    attrs = _memprof_attrs(span)
    (record,) = samples()
    response_end = {cp["name"]: cp for cp in record["checkpoints"]}["response_end"]["rss"]
    assert attrs["memprof.route"] == "/stream"
    assert attrs["memprof.rss_end"] == response_end
    assert attrs["memprof.request_id"] == record["request"]["id"]


async def test_unprofiled_requests_leave_spans_and_metrics_alone(
    otel_sdk: Otel, make_settings: Callable[..., Any]
) -> None:
    app = otel_sdk.wrap(
        MemprofMiddleware(starlette_app(), settings=make_settings(mode="light", sample_rate=0))
    )

    responses = await _get(app, "/", "/users/1")

    assert [r.status_code for r in responses] == [200, 200]
    spans = otel_sdk.server_spans()
    assert len(spans) == 2
    assert all(_memprof_attrs(s) == {} for s in spans)
    assert otel_sdk.points("memprof.request.memory.growth") == []


async def test_growth_histogram_per_route_and_memory_gauges(
    otel_sdk: Otel, make_settings: Callable[..., Any], samples: Callable[[], list[dict[str, Any]]]
) -> None:
    settings = make_settings(mode="aggressive", memory_limit_mb=4096)
    # no OpenTelemetry middleware: metrics do not need a span
    app = MemprofMiddleware(starlette_app(), settings=settings)

    await _get(app, "/users/1", "/users/2", "/")

    records = samples()  # flushes: the histogram is fed from the writer thread, off the request path
    points = {p.attributes["http.route"]: p for p in otel_sdk.points("memprof.request.memory.growth")}
    assert set(points) == {"/users/{user_id}", "/"}
    assert points["/users/{user_id}"].count == 2 and points["/"].count == 1
    assert all(p.attributes["memprof.mode"] == "aggressive" for p in points.values())
    growth = {}
    for record in records:
        route = record["request"]["route"]
        growth[route] = growth.get(route, 0) + max(0, record["memory"]["rss_delta"])
    assert {route: p.sum for route, p in points.items()} == growth
    assert list(points["/"].explicit_bounds) == list(otel.GROWTH_BUCKETS)
    # the heap growth of the same requests, in its own histogram
    heap_points = {p.attributes["http.route"]: p for p in otel_sdk.points("memprof.request.heap.growth")}
    heap_growth: dict[str, int] = {}
    for record in records:
        route, heap = record["request"]["route"], record["memory"]["heap"]
        heap_growth[route] = heap_growth.get(route, 0) + heap["peak"] - heap["start"]
    assert {route: p.sum for route, p in heap_points.items()} == heap_growth
    assert heap_points["/users/{user_id}"].count == 2

    (rss,) = otel_sdk.points("memprof.process.memory.rss")
    assert abs(rss.value - rss_bytes()) < 64 * MiB
    (limit,) = otel_sdk.points("memprof.process.memory.limit")
    assert limit.value == 4096 * MiB
    assert limit.attributes == {"memprof.limit_source": "setting"}
    (utilization,) = otel_sdk.points("memprof.process.memory.utilization")
    assert utilization.value == pytest.approx(rss.value / limit.value, rel=0.25)


def test_dump_and_guard_trip_counters() -> None:
    # not instrumented: no-ops
    otel.record_dump("manual")
    otel.record_guard_trip("overhead")
    assert not otel.is_instrumented()

    sdk = Otel()
    otel.instrument_opentelemetry(meter_provider=sdk.meter_provider)
    try:
        otel.record_dump("threshold")
        otel.record_dump("threshold")
        otel.record_dump("manual")
        otel.record_guard_trip("circuit_breaker")
        dumps = {p.attributes["memprof.trigger"]: p.value for p in sdk.points("memprof.dumps")}
        trips = {p.attributes["memprof.guard"]: p.value for p in sdk.points("memprof.guard.trips")}
        assert dumps == {"threshold": 2, "manual": 1}
        assert trips == {"circuit_breaker": 1}
    finally:
        otel.uninstrument_opentelemetry()
    otel.record_dump("threshold")  # after uninstrumenting: not counted, gauges silent
    assert {p.attributes["memprof.trigger"]: p.value for p in sdk.points("memprof.dumps")} == {
        "threshold": 2,
        "manual": 1,
    }
    assert sdk.points("memprof.process.memory.rss") == []


async def test_instrumenting_again_replaces_the_instruments(make_settings: Callable[..., Any]) -> None:
    first, second = Otel(), Otel()
    otel.instrument_opentelemetry(meter_provider=first.meter_provider)
    otel.instrument_opentelemetry(meter_provider=second.meter_provider)
    try:
        await _get(MemprofMiddleware(starlette_app(), settings=make_settings()), "/")
        assert memprof.flush(10.0)
        assert first.points("memprof.request.memory.growth") == []
        assert [p.count for p in second.points("memprof.request.memory.growth")] == [1]
    finally:
        otel.uninstrument_opentelemetry()


@pytest.mark.internal_errors_expected
async def test_a_failing_export_never_reaches_the_app(
    otel_sdk: Otel,
    make_settings: Callable[..., Any],
    samples: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(internal_errors, "raise_errors", False)
    assert otel._state is not None
    monkeypatch.setattr(otel._state, "current_span", broken)  # request path
    monkeypatch.setattr(otel._state.growth, "record", broken)  # writer thread
    app = otel_sdk.wrap(MemprofMiddleware(starlette_app(), settings=make_settings()))

    (response,) = await _get(app, "/users/5")

    assert (response.status_code, response.json()) == (200, {"id": "5", "n": 10_000})
    assert len(samples()) == 1  # the record is still written
    assert internal_errors.counts["response_end_hook:_on_response_end"] == 1
    assert internal_errors.counts["complete_hook:_on_complete"] == 1
    assert internal_errors.counts["sink:_on_record"] == 1
    (span,) = otel_sdk.server_spans()
    assert _memprof_attrs(span) == {}

"""The compared set-ups: the same app bare, behind memprof, and behind the tools users would pick instead.

Every peer runs as it would in production, but nothing leaves the machine: OpenTelemetry exports spans
and metrics to exporters that drop them (batch processor and periodic reader as in production), Sentry
gets a transport that drops envelopes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare import app_base

VARIANTS = (
    "bare",
    "memprof light",
    "memprof aggressive",
    "OpenTelemetry",
    "Sentry",
    "BaseHTTPMiddleware",
)
DESCRIPTIONS = {
    "bare": "no middleware",
    "memprof light": "MemprofMiddleware, light mode, default sample rate 0.01",
    "memprof aggressive": "MemprofMiddleware, aggressive mode (every request, full detail)",
    "OpenTelemetry": "opentelemetry-instrumentation-asgi + -sqlalchemy, every span sampled, batch export",
    "Sentry": "sentry-sdk (FastAPI/Starlette/SQLAlchemy integrations), traces_sample_rate=1.0",
    "BaseHTTPMiddleware": "a Starlette BaseHTTPMiddleware that only calls call_next",
}


def build(variant: str, data_dir: Path) -> Any:
    """The ASGI app of ``variant``, its database and memprof data under ``data_dir``."""
    engine = app_base.make_engine(data_dir / "bench.db")
    if variant == "Sentry":
        _init_sentry()  # before the app is built: Sentry patches Starlette and FastAPI classes
    app = app_base.make_app(engine)
    if variant in ("bare", "Sentry"):
        return app
    if variant.startswith("memprof"):
        import memprof
        from memprof import MemprofMiddleware, load_settings

        mode = variant.split()[1]
        settings = load_settings(mode=mode, data_dir=data_dir / "memprof-data")
        instrument = getattr(memprof, "instrument_sqlalchemy", None)
        if mode == "aggressive" and instrument is not None:
            instrument(engine)
        app.add_middleware(MemprofMiddleware, settings=settings)
        return app
    if variant == "OpenTelemetry":
        return _otel(app, engine)
    if variant == "BaseHTTPMiddleware":
        from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
        from starlette.requests import Request
        from starlette.responses import Response

        async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
        return app
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def _otel(app: Any, engine: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(DropMetrics(), 10_000)])
    SQLAlchemyInstrumentor().instrument(
        engine=engine, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    app.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return app


def _init_sentry() -> None:
    import sentry_sdk
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    class DropEnvelopes(Transport):
        def capture_envelope(self, envelope: Envelope) -> None:
            return None

        def flush(self, timeout: float, callback: Callable[..., Any] | None = None) -> None:
            return None

        def kill(self) -> None:
            return None

    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",  # never contacted: the transport drops everything
        transport=DropEnvelopes(),
        traces_sample_rate=1.0,
        send_default_pii=False,
    )

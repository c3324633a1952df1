"""Circuit breaker and overhead guard, driven through a real Starlette app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof import runtime as runtime_mod
from memprof.background import BACKGROUND
from memprof.safety.guards import (
    COOLDOWN_S,
    MAX_COOLDOWN_S,
    OVERHEAD_TRIP_COUNT,
    OVERHEAD_WINDOW,
    CircuitBreaker,
    OverheadGuard,
    narrow,
)
from memprof.safety.isolation import errors
from memprof.settings import Mode
from tests.apps import serving, starlette_app

FAILING = {"on": True}


def _failing_hook(profile: Any, scope: Any) -> None:
    if FAILING["on"]:
        raise RuntimeError("integration bug")


@pytest.fixture
def failing_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bool]]:
    monkeypatch.setattr(errors, "raise_errors", False)
    FAILING["on"] = True
    runtime_mod.register_hooks(on_start=_failing_hook)
    yield FAILING
    runtime_mod.START_HOOKS.remove(_failing_hook)


def profiled(client: TestClient) -> bool:
    return client.get("/slow", params={"s": "0"}).json()["request_id"] is not None


@pytest.mark.internal_errors_expected
def test_breaker_opens_after_consecutive_failures_then_one_trial_closes_it(
    make_settings: Callable[..., Any], failing_hook: dict[str, bool]
) -> None:
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(circuit_breaker_failures=3))
    rt = mw.runtime
    with TestClient(mw) as client:
        assert [profiled(client) for _ in range(3)] == [True, True, True]  # each one fails inside memprof
        assert rt.breaker.state == "open" and rt.paused == "circuit_breaker"
        assert [profiled(client) for _ in range(5)] == [False] * 5
        assert errors.counts["start_hook:_failing_hook"] == 3

        rt.breaker.tick(now=time.monotonic() + COOLDOWN_S - 1)
        assert rt.breaker.state == "open"
        rt.breaker.tick(now=time.monotonic() + COOLDOWN_S + 1)
        assert rt.breaker.state == "half_open" and rt.paused is None
        failing_hook["on"] = False
        # One trial at a time: a concurrent request while the trial runs would not be profiled.
        assert profiled(client) is True
        assert mw.runtime.writer.flush()
        assert rt.breaker.state == "closed" and rt.breaker.backoff.cooldown_s == COOLDOWN_S
        assert [profiled(client) for _ in range(3)] == [True] * 3


@pytest.mark.internal_errors_expected
def test_failed_trial_doubles_the_cooldown_up_to_an_hour(
    make_settings: Callable[..., Any], failing_hook: dict[str, bool]
) -> None:
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(circuit_breaker_failures=2))
    breaker = mw.runtime.breaker
    with TestClient(mw) as client:
        profiled(client), profiled(client)
        assert breaker.state == "open"
        seen = [breaker.backoff.cooldown_s]
        for _ in range(8):
            breaker.tick(now=breaker.backoff.until + 0.1)
            assert breaker.state == "half_open"
            assert profiled(client) is True  # the trial, which fails again
            assert profiled(client) is False
            assert breaker.state == "open"
            seen.append(breaker.backoff.cooldown_s)
    assert seen == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert MAX_COOLDOWN_S == 3600


@pytest.mark.internal_errors_expected
def test_records_built_late_never_credit_a_failed_request_as_a_success(
    make_settings: Callable[..., Any], failing_hook: dict[str, bool]
) -> None:
    """Records are built on the background thread, in their own time: two failed requests whose records
    are built one after the other (nothing failing in between) are still two failures."""
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(circuit_breaker_failures=3))
    rt = mw.runtime
    with TestClient(mw) as client:
        with BACKGROUND.gate:  # no record is built while the two requests fail
            assert [profiled(client) for _ in range(2)] == [True, True]
        rt.writer.flush(10)  # both records built, no failure in between
        assert rt.breaker.failures == 2 and rt.breaker.state == "closed"
        assert profiled(client) is True  # the third consecutive failure
        assert rt.breaker.state == "open"
    mw.close()


def test_breaker_counts_consecutive_failures_only() -> None:
    b = CircuitBreaker(3)
    b.failure(), b.failure()
    b.check(True)  # a record of a request during which nothing failed
    b.check(False)  # one during which something failed: no success, no failure (counted when it happened)
    assert b.failures == 0
    b.failure(), b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and b.open and not b.half_open


def test_narrow_modes() -> None:
    assert narrow(Mode.AGGRESSIVE, 1) is Mode.LIGHT
    assert narrow(Mode.AGGRESSIVE, 2) is None
    assert narrow(Mode.LIGHT, 1) is None
    assert narrow(Mode.TARGETED, 1) is None
    assert narrow(Mode.LIGHT, 0) is Mode.LIGHT


def test_overhead_guard_steps_down_aggressive_light_off_and_restores(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.logs import capture_logs

    mw = MemprofMiddleware(starlette_app(), settings=make_settings(overhead_limit_ms=0.5))
    rt = mw.runtime
    slow = {"on": True}
    real_rss = runtime_mod.rss_at

    def slow_rss(now_ns: int) -> int:  # memprof's own reading made slow: ~1 ms each, two per request
        if slow["on"]:
            time.sleep(0.001)
        return real_rss(now_ns)

    monkeypatch.setattr(runtime_mod, "rss_at", slow_rss)
    with TestClient(mw) as client, capture_logs() as logs:
        for _ in range(OVERHEAD_TRIP_COUNT):
            client.get("/")
        assert rt.guard.steps == 1 and rt.mode is Mode.LIGHT and rt.paused is None
        assert rt.sample_rate == 0.01
        monkeypatch.setattr(rt, "sample_rate", 1.0)  # profile every light request to trip it again
        for _ in range(OVERHEAD_TRIP_COUNT):
            client.get("/")
        assert rt.guard.steps == 2 and rt.paused == "overhead_guard"
        assert profiled(client) is False
        events = [e for e in logs if e["event"] == "memprof.overhead_guard.backoff"]
        assert [e["steps"] for e in events] == [1, 2]  # logged once per step, not per request
        slow["on"] = False
        rt.guard.tick(now=time.monotonic() + MAX_COOLDOWN_S)
        assert rt.guard.steps == 0 and rt.mode is Mode.AGGRESSIVE and rt.paused is None
        assert rt.sample_rate == 1.0
        assert profiled(client) is True


def test_overhead_guard_ignores_rare_slow_requests() -> None:
    guard = OverheadGuard(limit_ms=1.0)
    for i in range(OVERHEAD_WINDOW * 5):
        guard.observe(5_000_000 if i % 10 == 0 else 1000)  # one in ten over the limit
    assert guard.steps == 0
    assert len(guard.window) == OVERHEAD_WINDOW and guard.over == OVERHEAD_WINDOW // 10


def test_trips_are_counted_in_opentelemetry(make_settings: Callable[..., Any], data_dir: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from memprof.integrations import opentelemetry as otel

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument_opentelemetry(meter_provider=provider)
    try:
        breaker = CircuitBreaker(2)
        breaker.failure(), breaker.failure(), breaker.failure()  # one trip, not two
        guard = OverheadGuard(limit_ms=1.0)
        for _ in range(OVERHEAD_TRIP_COUNT):
            guard.observe(5_000_000)
        mw = serving(MemprofMiddleware(starlette_app(), settings=make_settings(control_poll_interval_s=0.05)))
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "DISABLED").touch()
        deadline = time.monotonic() + 3
        while mw.runtime.paused != "kill_switch_file" and time.monotonic() < deadline:
            time.sleep(0.02)
        data = reader.get_metrics_data()
        trips = {
            p.attributes["memprof.guard"]: p.value
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "memprof.guard.trips"
            for p in m.data.data_points
        }
        assert trips == {"circuit_breaker": 1, "overhead": 1, "kill_switch": 1}
    finally:
        otel.uninstrument_opentelemetry()
        provider.shutdown()

"""Critical dumps through the public surface: dump(name), file mode, atomicity, retention, MemoryError,
the memory guard."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware
from memprof.memory import MemoryLimit, rss_bytes
from memprof.records.models import Dump
from tests._memprof_server import wait_for
from tests.apps import serving

NAME_RE = re.compile(
    r"^dump-\d{8}T\d{12}-(\d+)-(threshold|custom|manual|memory_error|signal)(-[\w.-]+)?\.json$"
)
PLANTED = "planted-secret-7f3a9c"


def _dumps(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "dumps").glob("dump-*.json"))


def _app(settings: Any) -> MemprofMiddleware:
    def inside(request: Request) -> Response:
        token = PLANTED  # a local variable holding a secret: stacks never carry locals
        path = memprof.dump(request.path_params["name"])
        return JSONResponse({"path": path, "n": len(token)})

    async def oom(request: Request) -> Response:
        raise MemoryError("cannot allocate")

    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [Route("/inside/{name}", inside), Route("/oom/{kind}", oom), Route("/ok", ok)]
    return MemprofMiddleware(Starlette(routes=routes), settings=settings)


def test_dump_in_a_request_names_it_and_is_private(make_settings: Callable[..., Any], data_dir: Path) -> None:
    app = _app(make_settings())
    with TestClient(app) as client:
        path = client.get("/inside/report?token=" + PLANTED).json()["path"]
    file = Path(path)
    assert file.parent == data_dir / "dumps"
    match = NAME_RE.match(file.name)
    assert match and match.group(1) == str(os.getpid()) and match.group(2) == "custom"
    assert match.group(3) == "-report"
    assert file.stat().st_mode & 0o777 == 0o600
    assert file.parent.stat().st_mode & 0o777 == 0o700
    text = file.read_text()
    assert PLANTED not in text, "no query strings or local variables in a dump"
    record = json.loads(text)
    Dump.model_validate(record)
    assert record["trigger"] == "custom" and record["name"] == "report"
    assert record["request"]["route"] == "/inside/{name}" and record["request"]["path"] == "/inside/report"
    assert record["objects"]["total"] > 1000 and record["objects"]["top"][0]["count"] > 0
    assert any(t["current"] and any(" in inside" in f for f in t["stack"]) for t in record["threads"])
    assert record["memory"]["rss"] > 0 and record["memory"]["tracemalloc"] is None
    assert not list((data_dir / "dumps").glob(".*.tmp"))


def test_dump_is_a_noop_when_memprof_is_off(make_settings: Callable[..., Any], data_dir: Path) -> None:
    app = _app(make_settings(enabled=False))
    with TestClient(app) as client:
        assert client.get("/inside/x").json()["path"] is None
    assert memprof.dump("outside") is None
    assert not (data_dir / "dumps").exists()


def test_a_reader_never_sees_a_partial_dump(make_settings: Callable[..., Any], data_dir: Path) -> None:
    app = MemprofMiddleware(Starlette(), settings=make_settings())  # dump() uses the newest live one
    ballast = [{"k": i, "v": [i] * 5} for i in range(200_000)]  # makes each dump take a while
    seen: list[str] = []
    partial: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for path in _dumps(data_dir):
                try:
                    json.loads(path.read_text())
                    seen.append(path.name)
                except FileNotFoundError:
                    pass
                except ValueError:
                    partial.append(path.name)  # a partial file would not parse

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        paths = [memprof.dump(f"n{i}") for i in range(4)]
    finally:
        stop.set()
        thread.join(10)
    assert all(paths) and len(set(paths)) == 4
    assert not partial
    assert seen and set(seen) <= {Path(p).name for p in paths if p}
    assert not list((data_dir / "dumps").glob(".*.tmp"))
    assert len(ballast) == 200_000 and app.runtime.enabled


def test_retention_by_count_age_and_total_size(make_settings: Callable[..., Any], data_dir: Path) -> None:
    app = MemprofMiddleware(Starlette(), settings=make_settings(dump_keep=3))
    paths = [memprof.dump(f"c{i}") for i in range(5)]
    kept = _dumps(data_dir)
    assert [p.name for p in kept] == [Path(p).name for p in paths[2:]]  # type: ignore[arg-type]

    old = kept[0]
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    newest = memprof.dump("after-age")
    names = [p.name for p in _dumps(data_dir)]
    assert old.name not in names and Path(newest or "").name in names

    size = Path(newest or "").stat().st_size
    app = MemprofMiddleware(
        Starlette(), settings=make_settings(dump_keep=50, dump_max_total_mb=2.5 * size / 2**20)
    )
    for i in range(4):
        memprof.dump(f"t{i}")
    remaining = _dumps(data_dir)
    assert sum(p.stat().st_size for p in remaining) <= 2.5 * size * 1.2
    assert remaining[-1].name.endswith("-t3.json") and len(remaining) <= 3
    assert app.runtime.enabled


def test_size_cap_shortens_lists(make_settings: Callable[..., Any], data_dir: Path) -> None:
    app = MemprofMiddleware(Starlette(), settings=make_settings(dump_max_mb=0.005))
    assert app.runtime.enabled
    path = Path(memprof.dump("small") or "")
    record = json.loads(path.read_text())
    assert record["truncated"] is True
    assert len(record["modules"]["largest"]) == 0 and len(record["objects"]["top"]) <= 20
    Dump.model_validate(record)


def test_memory_error_dumps_and_is_reraised_unchanged(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    app = _app(make_settings())
    with TestClient(app) as client, pytest.raises(MemoryError, match="cannot allocate"):
        client.get("/oom/big")
    (path,) = wait_for(lambda: _dumps(data_dir))
    record = json.loads(path.read_text())
    assert record["trigger"] == "memory_error"
    assert record["request"]["route"] == "/oom/{kind}" and record["request"]["method"] == "GET"


def test_memory_guard_drops_to_checkpoints_and_resumes(
    make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    # A limit the process is already past 90% of: the watchdog dumps once and raises the guard.
    limit_mb = rss_bytes() / 0.95 / 2**20
    app = serving(
        _app(make_settings(memory_limit_mb=limit_mb, watchdog_interval_ms=20, dump_cooldown_s=3600))
    )
    runtime = app.runtime
    wait_for(lambda: runtime.memory_guard)
    (path,) = wait_for(lambda: _dumps(data_dir))
    assert json.loads(path.read_text())["trigger"] == "threshold"
    with TestClient(app) as client:
        client.get("/ok")
        runtime.limit = MemoryLimit(rss_bytes() * 10, "setting")  # pressure relieved
        wait_for(lambda: not runtime.memory_guard)
        client.get("/ok")
    details = [s["detail"] for s in samples()]
    assert details == ["checkpoints", "full"]
    assert len(_dumps(data_dir)) == 1, "one dump for one high-water mark"


def test_hysteresis_must_stay_below_the_threshold(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(memprof.MemprofConfigError, match="MEMPROF_DUMP_HYSTERESIS must be below"):
        make_settings(dump_threshold=0.5, dump_hysteresis=0.6)


def test_dumps_and_memory_guard_trips_are_counted_in_opentelemetry(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from memprof.integrations import opentelemetry as otel

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument_opentelemetry(meter_provider=provider)
    try:
        limit_mb = rss_bytes() / 0.95 / 2**20
        app = serving(_app(make_settings(memory_limit_mb=limit_mb, watchdog_interval_ms=20)))
        wait_for(lambda: _dumps(data_dir))
        memprof.dump("counted")

        def points(name: str) -> dict[str, int]:
            data = reader.get_metrics_data()
            out: dict[str, int] = {}
            for rm in data.resource_metrics if data else []:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == name:
                            out.update(
                                {
                                    str(next(iter(p.attributes.values()))): p.value
                                    for p in metric.data.data_points
                                }
                            )
            return out

        dumps = points("memprof.dumps")
        assert dumps["custom"] == 1 and dumps["threshold"] >= 1  # >=: other tests' runtimes may linger
        assert points("memprof.guard.trips")["memory"] >= 1
        assert app.runtime.memory_guard
    finally:
        otel.uninstrument_opentelemetry()
        provider.shutdown()


def test_tracemalloc_sites_only_when_tracing_was_turned_on(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    import tracemalloc

    app = MemprofMiddleware(Starlette(), settings=make_settings(tracemalloc=1))
    off = json.loads(Path(memprof.dump("not-tracing") or "").read_text())
    assert off["memory"]["tracemalloc"] is None, "no snapshot unless tracing runs"
    tracemalloc.start(1)
    try:
        held = [bytes(1000) for _ in range(2000)]
        on = json.loads(Path(memprof.dump("tracing") or "").read_text())
    finally:
        tracemalloc.stop()
    sites = on["memory"]["tracemalloc"]
    assert sites["traced"] > 2_000_000 and sites["top"][0]["size"] > 0
    assert any("test_dump.py" in s["site"] for s in sites["top"])
    assert len(held) == 2000 and app.runtime.enabled

"""The record writer: never blocks, drops and counts when full, rotates, caps the total, emits events."""

from __future__ import annotations

import itertools
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from memprof.writer import RecordWriter
from tests.conftest import fill
from tests.logs import capture_logs


def _writer(tmp_path: Path, **kw: Any) -> RecordWriter:
    opts: dict[str, Any] = {"max_file_bytes": 10_000, "max_total_bytes": 1_000_000, "queue_size": 100}
    opts.update(kw)
    return RecordWriter(tmp_path / "data", log_events=opts.pop("log_events", False), **opts)


def _identity(item: Any) -> dict[str, Any]:
    return dict(item)


def test_writes_lines_and_flushes(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    for i in range(50):
        assert w.submit({"i": i}, _identity)
    assert w.flush(5)
    lines = [
        json.loads(x)
        for p in sorted((tmp_path / "data").glob("samples-*.jsonl"))
        for x in p.read_text().splitlines()
    ]
    assert [x["i"] for x in lines] == list(range(50))
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "data").glob("*.jsonl"))
    w.close()


def test_rotation_and_total_cap(tmp_path: Path) -> None:
    w = _writer(tmp_path, max_file_bytes=2_000, max_total_bytes=6_000)
    for i in range(400):
        w.submit({"i": i, "pad": "x" * 80}, _identity)
        if i % 50 == 0:
            w.flush(5)
    w.flush(5)
    files = sorted((tmp_path / "data").glob("samples-*.jsonl"))
    assert len(files) >= 2
    assert sum(p.stat().st_size for p in files) <= 6_000 + 2_000
    last = [json.loads(x)["i"] for x in files[-1].read_text().splitlines()]
    assert last[-1] == 399  # the newest are kept, the oldest removed
    w.close()


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(item: Any) -> dict[str, Any]:
        gate.wait(5)
        return {"i": item}

    w = _writer(tmp_path, queue_size=5)
    accepted = sum(w.submit(i, slow) for i in range(50))
    assert accepted <= 6 and w.dropped == 50 - accepted
    gate.set()
    assert w.flush(5)
    w.close()


def test_the_log_event_carries_the_record(tmp_path: Path) -> None:
    w = _writer(tmp_path, log_events=True)
    with capture_logs() as logs:
        w.submit({"schema": "memprof.sample", "request": {"route": "/x"}}, _identity)
        assert w.flush(5)
    (event,) = [e for e in logs if e["event"] == "memprof.request.completed"]
    assert event["request"] == {"route": "/x"} and event["schema"] == "memprof.sample"
    w.close()


def test_flush_waits_for_the_record_being_built(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    building, release = threading.Event(), threading.Event()

    def slow(item: Any) -> dict[str, Any]:
        building.set()
        release.wait(10)
        return dict(item)

    assert w.submit({"i": 1}, slow)
    assert w.flush(0.01) is False  # (and it woke the thread)
    assert building.wait(5)
    assert w.pending == 1  # taken off the queue, not written yet
    assert w.flush(0.2) is False  # the queue is empty but the thread is busy with it
    release.set()
    assert w.flush(5) and w.pending == 0
    (path,) = (tmp_path / "data").glob("samples-*.jsonl")
    assert json.loads(path.read_text()) == {"i": 1}
    w.close()


@pytest.mark.internal_errors_expected
def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_line(tmpfs: Path) -> None:
    data = tmpfs / "data"
    w = RecordWriter(data, max_file_bytes=1 << 20, max_total_bytes=1 << 30, queue_size=1000, log_events=False)
    w.submit({"i": -1}, _identity)
    assert w.flush(5) and w.written == 1
    filler = fill(tmpfs)
    os.truncate(filler, filler.stat().st_size - 4096)  # one page free: a 20 KB batch is cut short in it
    gate = threading.Event()

    def held(item: Any) -> dict[str, Any]:
        gate.wait(5)  # the whole batch is queued before the thread writes it: one write, cut short
        return dict(item)

    for i in range(20):
        w.submit({"i": i, "pad": "x" * 1000}, held)
    gate.set()
    assert w.flush(5)
    (path,) = data.glob("samples-*.jsonl")
    content = path.read_bytes()
    assert content.endswith(b"\n") and [json.loads(x)["i"] for x in content.splitlines()] == [-1]
    assert w.written == 1 and w.write_failed == 20 and "No space left" in (w.last_error or "")
    filler.unlink()
    w.submit({"i": 99}, _identity)
    assert w.flush(5) and w.written == 2  # written again once there is room
    assert [json.loads(x)["i"] for x in path.read_bytes().splitlines()] == [-1, 99]
    w.close()


def test_a_slow_sink_never_holds_the_watchdog_up(make_settings: Any, monkeypatch: Any) -> None:
    """Records are written on memprof's one background thread, the watchdog's too: a slow consumer of
    records (an app's logging handler, an exporter) gets one round at a time, and the watchdog ticks
    between its records."""
    import time

    from starlette.testclient import TestClient

    from memprof import MemprofMiddleware
    from memprof import writer as writer_mod
    from memprof.watchdog.thread import WATCHDOG
    from tests.apps import starlette_app

    ticks_seen: list[int] = []

    def slow_sink(record: dict[str, Any]) -> None:
        ticks_seen.append(WATCHDOG.ticks)
        time.sleep(0.05)  # longer than the watchdog's interval and a drain round

    monkeypatch.setattr(writer_mod, "DRAIN_ROUND_S", 0.01)
    writer_mod.register_sink(slow_sink)
    try:
        app = MemprofMiddleware(starlette_app(), settings=make_settings(watchdog_interval_ms=20))
        assert app.runtime is not None
        with TestClient(app) as client:
            for i in range(5):
                client.get(f"/users/{i}")
            assert app.runtime.writer.flush(10)
        app.close()
    finally:
        writer_mod.unregister_sink(slow_sink)
    assert len(ticks_seen) == 5
    assert all(b > a for a, b in itertools.pairwise(ticks_seen)), ticks_seen

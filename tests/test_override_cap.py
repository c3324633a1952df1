"""No runtime override lasts more than 24 h, whatever wrote it: the worker cuts a hand-written control
file's far ``until`` (a Redis key set for a year: tests/test_redis.py), not only the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from memprof.safety.control_plane import (
    AGGRESSIVE_DEFAULT_S,
    MAX_OVERRIDE_S,
    OFF,
    Override,
    bounded,
    control_path,
)
from tests._memprof_server import Server, wait_for

YEAR = 365 * 86400
CEILING = {
    "MEMPROF_MODE": "light",
    "MEMPROF_CONTROL_MAX_MODE": "aggressive",
    "MEMPROF_CONTROL_POLL_INTERVAL_S": "0.2",
}


def status(data_dir: Path) -> dict[str, Any]:
    files = list((data_dir / "status").glob("*.json"))
    return dict(json.loads(files[0].read_text())) if files else {}


def test_bounded() -> None:
    start = 1_000_000.0
    far = Override("aggressive", start + YEAR, "x")
    assert bounded(far, start) == Override("aggressive", start + MAX_OVERRIDE_S, "x")
    assert bounded(Override("light", None, "x"), start) == Override("light", start + MAX_OVERRIDE_S, "x")
    assert bounded(Override("aggressive", None, "x"), start) == Override(
        "aggressive", start + AGGRESSIVE_DEFAULT_S, "x"
    )
    near = Override("aggressive", start + 600, "x")
    assert bounded(near, start) is near
    assert bounded(Override(OFF, None, "x"), start) == Override(OFF, None, "x")  # narrowing to off: as asked


def test_a_control_file_asking_for_a_year_gets_24_hours_from_when_it_was_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, **CEILING)
    try:
        path = control_path(data_dir)
        path.write_text(json.dumps({"mode": "aggressive", "until": time.time() + YEAR}))
        written = path.stat().st_mtime
        wait_for(lambda: status(data_dir).get("mode") == "aggressive")
        until = status(data_dir)["control"]["override"]["until"]
        assert until == pytest.approx(written + MAX_OVERRIDE_S, abs=1.0)
        # The same file, written 25 hours ago: past its 24 h, the worker is back to its own mode.
        os.utime(path, (written - 25 * 3600, written - 25 * 3600))
        wait_for(
            lambda: status(data_dir).get("mode") == "light" and not status(data_dir)["control"]["override"]
        )
    finally:
        server.stop()

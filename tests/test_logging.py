"""memprof logs through the standard library logger ``memprof`` and never configures logging: an app that
configured nothing sees no per-request line (and no start-up noise below WARNING), a worker loads neither
structlog nor rich nor pygments, and an app that routes stdlib logs through structlog gets the per-request
event with the record's fields, which ``memprof analyze -`` reads back."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import structlog

from tests._memprof_server import free_port, wait_for
from tests.cli import run_cli

APP = """
    import sys
    from fastapi import FastAPI
    from memprof import MemprofMiddleware

    app = FastAPI()
    app.add_middleware(MemprofMiddleware)

    @app.get("/modules")
    def modules():
        return sorted({m.split(".")[0] for m in sys.modules})
"""


def test_default_settings_print_nothing_per_request_and_load_no_console_libraries(tmp_path: Path) -> None:
    """Under a real uvicorn, aggressive mode with default logging: samples written, nothing printed per
    request, and the worker loaded neither structlog nor rich nor pygments."""
    (tmp_path / "quiet_app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEMPROF_")}}
    env.update({"MEMPROF_MODE": "aggressive", "MEMPROF_DATA_DIR": str(tmp_path / "data")})
    cmd = [sys.executable, "-m", "uvicorn", "quiet_app:app", "--app-dir", str(tmp_path), "--port", str(port)]
    cmd += ["--no-access-log"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/modules"
        assert wait_for(lambda: _get(url) is not None, timeout=20)
        loaded = {}
        for _ in range(30):
            loaded = _get(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert out == ""
    startup = [line for line in err.splitlines() if not line.startswith("INFO:")]  # uvicorn's own lines
    assert startup == [], err
    assert not set(loaded) & {"structlog", "rich", "pygments", "typer"}
    samples = [json.loads(line) for p in (tmp_path / "data").glob("samples-*.jsonl") for line in p.open()]
    assert len(samples) >= 30 and all(s["mode"] == "aggressive" for s in samples)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_structlog_s_stdlib_integration_gets_the_event_and_the_analyzer_reads_it(
    make_settings: object, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from memprof import MemprofMiddleware
    from tests.apps import starlette_app

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("memprof")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        mw = MemprofMiddleware(starlette_app(), settings=make_settings(log_events=True))  # type: ignore[operator]
        with TestClient(mw) as client:
            for _ in range(3):
                assert client.get("/").status_code == 200
        import memprof

        assert memprof.flush(10)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = [line for line in lines if line["event"] == "memprof.request.completed"]
    assert len(events) == 3 and all(e["schema"] == "memprof.sample" and e["level"] == "info" for e in events)
    assert events[0]["request"]["route"] == "/"
    result = run_cli("analyze", "-", "--json", stdin=stream.getvalue())
    assert result.code == 0, result
    assert json.loads(result.stdout)["samples"] == 3

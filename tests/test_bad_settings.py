"""A bad ``MEMPROF_*`` setting never breaks the app: under a real uvicorn, with either wrap style, the app
answers every request, no traceback is printed, and one line names the variable and what it accepts.
``memprof check`` catches the same settings in a deploy pipeline (exit code 2, one sentence)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests._memprof_server import free_port
from tests.cli import run_cli

APPS = {
    "wrap": """
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from memprof import MemprofMiddleware

        async def home(request):
            return PlainTextResponse("hello")

        app = MemprofMiddleware(Starlette(routes=[Route("/", home)]))
    """,
    "add_middleware": """
        from fastapi import FastAPI
        from memprof import MemprofMiddleware

        app = FastAPI()
        app.add_middleware(MemprofMiddleware)

        @app.get("/")
        def home():
            return "hello"
    """,
}

BAD = [
    (
        {"MEMPROF_MODE": "fast"},
        "MEMPROF_MODE='fast' is not valid: expected 'light', 'aggressive' or 'targeted'",
    ),
    ({"MEMPROF_SAMPLE_RATE": "2"}, "MEMPROF_SAMPLE_RATE='2' is not valid"),
    ({"MEMPROF_MODE": "targeted"}, "MEMPROF_TARGETED_SECRET"),
]


def _serve(app_dir: Path, style: str, env: dict[str, str]) -> tuple[list[int], str]:
    (app_dir / f"bad_{style}.py").write_text(textwrap.dedent(APPS[style]))
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMPROF_")}
    full_env.update({"MEMPROF_DATA_DIR": str(app_dir / "data"), **env})
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bad_{style}:app",
        "--app-dir",
        str(app_dir),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not statuses:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code)
            except httpx.HTTPError:
                time.sleep(0.1)
        statuses += [httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code for _ in range(5)]
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0]
    return statuses, output


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(APPS))
@pytest.mark.parametrize(("env", "message"), BAD, ids=["mode", "sample_rate", "targeted_without_secret"])
def test_a_bad_setting_leaves_the_app_serving_and_names_the_variable_once(
    tmp_path: Path, style: str, env: dict[str, str], message: str
) -> None:
    statuses, output = _serve(tmp_path, style, env)
    assert statuses == [200] * 6, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "memprof is off" in line]
    assert len(lines) == 1, output
    assert message in lines[0] and "memprof check" in lines[0], output
    assert not (tmp_path / "data").exists()  # memprof wrote nothing: it is off


@pytest.mark.parametrize(("env", "message"), BAD, ids=["mode", "sample_rate", "targeted_without_secret"])
def test_memprof_check_names_the_bad_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    for key in list(os.environ):
        if key.startswith("MEMPROF_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(tmp_path / "data"))
    result = run_cli("check")
    assert result.code == 2 and result.stdout == "", result
    assert (
        result.stderr.startswith("memprof: ") and message in result.stderr and result.stderr.count("\n") == 1
    )


def test_memprof_check_passes_good_settings_and_checks_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key.startswith("MEMPROF_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEMPROF_MODE", "aggressive")
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(tmp_path / "data"))
    result = run_cli("check")
    assert result.code == 0, result
    assert (
        result.stdout
        == f"memprof settings are valid: on, mode aggressive, sample rate 1, data dir {tmp_path / 'data'}\n"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(blocker / "data"))  # under a file: cannot be created
    result = run_cli("check")
    assert result.code == 2 and "cannot be written" in result.stderr, result

"""The Redis control plane with a real Redis server: kill switch and overrides across real workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.safety.control import poll_now, redis_client
from memprof.safety.control_plane import MAX_OVERRIDE_S
from tests._memprof_server import Server
from tests._memprof_server import wait_for as server_wait_for
from tests.apps import serving, starlette_app
from tests.cli import run_cli
from tests.conftest import IN_CI

REDIS_URL = os.environ.get("MEMPROF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent

UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "tests.test_redis:memprof_app"]
UVICORN += ["--host", "127.0.0.1", "--log-level", "warning"]

pytestmark = [pytest.mark.redis]


def memprof_app() -> Any:
    """The worker app the subprocesses serve (``uvicorn --factory tests.test_redis:memprof_app``)."""
    return MemprofMiddleware(starlette_app())


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    try:
        client = redis_client(REDIS_URL)
        client.ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {exc!r}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"memprof-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def profiled(client: Any, base: str = "") -> bool:
    r = client.get(f"{base}/slow", params={"s": "0"})
    assert r.status_code == 200
    return r.json()["request_id"] is not None


def test_redis_disable_and_mode_override_with_ttl(
    make_settings: Callable[..., Any], redis_prefix: str
) -> None:
    settings = make_settings(redis_url=REDIS_URL, redis_prefix=redis_prefix, control_poll_interval_s=0.05)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    rt = mw.runtime
    r = redis_client(REDIS_URL)
    with TestClient(mw) as client:
        assert profiled(client)
        r.set(redis_prefix + "disable", "1")
        assert wait_for(lambda: rt.paused == "redis_disable")
        assert not profiled(client)
        r.delete(redis_prefix + "disable")
        assert wait_for(lambda: rt.paused is None)
        r.set(redis_prefix + "mode", "light", px=600)
        assert wait_for(lambda: rt.mode.value == "light")
        assert rt.sample_rate == 0.01
        assert wait_for(lambda: rt.mode.value == "aggressive", timeout=3)  # the TTL ran out
        assert rt.control.redis_ok is True


def test_redis_cannot_widen_local_settings(make_settings: Callable[..., Any], redis_prefix: str) -> None:
    settings = make_settings(
        mode="light", redis_url=REDIS_URL, redis_prefix=redis_prefix, control_poll_interval_s=0.05
    )
    rt = serving(MemprofMiddleware(starlette_app(), settings=settings)).runtime
    redis_client(REDIS_URL).set(redis_prefix + "mode", "aggressive", ex=60)
    assert wait_for(lambda: rt.control.refused is not None)
    assert rt.mode.value == "light" and rt.sample_rate == 0.01
    redis_client(REDIS_URL).set(redis_prefix + "mode", "aggressive")  # no TTL: still a window
    wide = make_settings(
        mode="light",
        control_max_mode="aggressive",
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        control_poll_interval_s=0.05,
    )
    rt_wide = serving(MemprofMiddleware(starlette_app(), settings=wide)).runtime
    assert wait_for(lambda: rt_wide.mode.value == "aggressive")
    until = rt_wide.control.redis_override.until  # type: ignore[union-attr]
    assert until is not None and 29 * 60 < until - time.time() <= 30 * 60
    poll_now()
    time.sleep(0.2)
    assert rt_wide.control.redis_override.until == until  # type: ignore[union-attr]  # not pushed back
    off = make_settings(
        enabled=False, redis_url=REDIS_URL, redis_prefix=redis_prefix, control_poll_interval_s=0.05
    )
    assert MemprofMiddleware(starlette_app(), settings=off).runtime.control.resolve(False, 0) == (
        None,
        "disabled_by_settings",
    )


def test_cli_goes_through_redis_when_configured(
    make_settings: Callable[..., Any], redis_prefix: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMPROF_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("MEMPROF_REDIS_PREFIX", redis_prefix)
    settings = make_settings(redis_url=REDIS_URL, redis_prefix=redis_prefix, control_poll_interval_s=0.05)
    rt = serving(MemprofMiddleware(starlette_app(), settings=settings)).runtime
    out = run_cli("disable", "--data-dir", str(data_dir))
    assert out.code == 0 and "via redis" in out.stdout, out
    assert not (data_dir / "DISABLED").exists()
    assert wait_for(lambda: rt.paused == "redis_disable")
    out = run_cli("enable", "light", "--for", "10m", "--data-dir", str(data_dir))
    assert out.code == 0, out
    assert 590 <= redis_client(REDIS_URL).ttl(redis_prefix + "mode") <= 600
    assert wait_for(lambda: rt.paused is None and rt.mode.value == "light")
    poll_now()
    status_key = f"{redis_prefix}worker:{rt.host}-{os.getpid()}"
    assert wait_for(lambda: redis_client(REDIS_URL).get(status_key) is not None)
    out = run_cli("status", "--json", "--data-dir", str(data_dir / "elsewhere"))
    assert out.code == 0 and f'"{rt.host}-{os.getpid()}"' in out.stdout, out  # found through Redis


def test_unreachable_redis_leaves_local_settings_in_force(
    make_settings: Callable[..., Any], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:hunter2-password@127.0.0.1:{port}/0"
    settings = make_settings(redis_url=url, control_poll_interval_s=0.05)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    with TestClient(mw) as client:
        assert wait_for(lambda: mw.runtime.control.redis_ok is False)
        assert profiled(client) and mw.runtime.paused is None
        status = mw.runtime.status()
    assert status["control"]["redis"]["ok"] is False
    assert "hunter2" not in str(status)
    monkeypatch.setenv("MEMPROF_REDIS_URL", url)
    out = run_cli("disable", "--data-dir", str(data_dir))
    assert out.code == 3 and out.stderr.startswith("memprof: Redis at ") and "did not answer" in out.stderr, (
        out
    )
    assert "hunter2" not in out.stderr + out.stdout


@pytest.mark.slow
def test_kill_switch_reaches_two_worker_processes_within_two_seconds(
    redis_prefix: str, tmp_path: Path
) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = {
        **os.environ,
        "MEMPROF_MODE": "aggressive",
        "MEMPROF_REDIS_URL": REDIS_URL,
        "MEMPROF_REDIS_PREFIX": redis_prefix,
        "MEMPROF_DATA_DIR": str(tmp_path / "data"),
        "MEMPROF_LOG_EVENTS": "false",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MEMPROF_CONTROL_POLL_INTERVAL_S", None)  # the default, about once a second
    procs = [
        subprocess.Popen(
            [*UVICORN, "--port", str(port)],
            env=env,
            cwd=ROOT,
        )
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    r = redis_client(REDIS_URL)
    try:
        with httpx.Client(timeout=5) as client:

            def up(base: str) -> bool:
                try:
                    return profiled(client, base)
                except httpx.TransportError:
                    return False

            assert all(wait_for(lambda b=b: up(b), timeout=30) for b in bases)  # type: ignore[misc]
            r.set(redis_prefix + "disable", "1")
            t0 = time.monotonic()
            took = []
            for base in bases:
                assert wait_for(lambda b=base: not profiled(client, b), timeout=5)  # type: ignore[misc]
                took.append(time.monotonic() - t0)
            print(f"kill switch reached the workers after {', '.join(f'{t:.2f} s' for t in took)}")
            assert max(took) < 2.5, took
            r.delete(redis_prefix + "disable")
            assert all(wait_for(lambda b=b: profiled(client, b), timeout=5) for b in bases)  # type: ignore[misc]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


YEAR = 365 * 86400


def _status(data_dir: Path) -> dict[str, Any]:
    files = list((data_dir / "status").glob("*.json"))
    return dict(json.loads(files[0].read_text())) if files else {}


def test_a_redis_key_set_for_a_year_is_honoured_for_24_hours(tmp_path: Path, redis_prefix: str) -> None:
    data_dir = tmp_path / "data"
    client = redis_client(REDIS_URL)
    env = {
        "MEMPROF_MODE": "light",
        "MEMPROF_CONTROL_MAX_MODE": "aggressive",
        "MEMPROF_CONTROL_POLL_INTERVAL_S": "0.2",
    }
    server = Server(
        tmp_path / "app", data_dir, MEMPROF_REDIS_URL=REDIS_URL, MEMPROF_REDIS_PREFIX=redis_prefix, **env
    )
    try:
        set_at = time.time()
        client.set(f"{redis_prefix}mode", "aggressive", ex=YEAR)  # SET memprof:mode aggressive EX 31536000
        assert server_wait_for(lambda: _status(data_dir).get("mode") == "aggressive")
        until = _status(data_dir)["control"]["override"]["until"]
        assert set_at + MAX_OVERRIDE_S - 5 <= until <= time.time() + MAX_OVERRIDE_S
    finally:
        server.stop()


def test_a_redis_override_seen_for_24_hours_ends(
    make_settings: Callable[..., Any], redis_prefix: str
) -> None:
    settings = make_settings(
        mode="light", control_max_mode="aggressive", redis_url=REDIS_URL, redis_prefix=redis_prefix
    )
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    runtime = mw.runtime
    assert runtime is not None
    redis_client(REDIS_URL).set(f"{redis_prefix}mode", "aggressive", ex=YEAR)
    runtime.control.tick()
    assert runtime.mode.value == "aggressive"
    # The worker first saw this very key 25 hours ago (the same mode, the same expiry): it has ended.
    mode, until, _seen = runtime.control._redis_seen  # type: ignore[misc]
    runtime.control._redis_seen = (mode, until, time.time() - 25 * 3600)
    runtime.control.tick()
    assert runtime.mode.value == "light" and runtime.control.override() is None
    # Set again (a new expiry, later than the one seen): a new window.
    redis_client(REDIS_URL).set(f"{redis_prefix}mode", "aggressive", ex=YEAR + 3600)
    runtime.control.tick()
    assert runtime.mode.value == "aggressive"
    mw.close()

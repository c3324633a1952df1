"""Kill switch and runtime control through files in the data dir, and `memprof status`, end to end."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.safety.control import poll_now
from tests.apps import starlette_app
from tests.cli import run_cli

SECRET = "control-secret-0123456789abcdef"


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def detail(client: TestClient) -> str | None:
    """'full', 'checkpoints' or None (not profiled), as the endpoint sees its own profile."""
    r = client.get("/slow", params={"s": "0"})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    if rid is None:
        return None
    rt = client.app.runtime  # type: ignore[attr-defined]
    return "full" if rt.mode.value == "aggressive" else "checkpoints"


def cli(*args: str, data_dir: Path) -> str:
    result = run_cli(*args, "--data-dir", str(data_dir))
    assert result.code == 0 and result.stderr == "", result
    return result.stdout


def test_kill_switch_file_disables_within_a_poll_and_enable_restores(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(control_poll_interval_s=0.05))
    rt = mw.runtime
    with TestClient(mw) as client:
        assert detail(client) == "full"
        out = cli("disable", data_dir=data_dir)
        assert "off until changed (via kill_switch_file)" in out
        assert (data_dir / "DISABLED").exists()
        assert wait_for(lambda: rt.paused == "kill_switch_file")
        assert detail(client) is None
        cli("enable", data_dir=data_dir)
        assert wait_for(lambda: rt.paused is None)
        assert detail(client) == "full"


def test_kill_switch_file_present_at_start_up_counts_from_the_first_request(
    make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "DISABLED").touch()
    with TestClient(MemprofMiddleware(starlette_app(), settings=make_settings())) as client:
        assert client.get("/").text == "hello"
    assert samples() == []


def test_enable_narrows_and_expires_but_never_widens(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    mw = MemprofMiddleware(
        starlette_app(),
        settings=make_settings(mode="light", sample_rate=1.0, control_poll_interval_s=0.05),
    )
    rt = mw.runtime
    with TestClient(mw) as client:
        assert detail(client) == "checkpoints"
        cli("enable", "aggressive", "--for", "1h", data_dir=data_dir)
        poll_now()
        assert wait_for(lambda: rt.control.refused is not None)
        assert "above MEMPROF_CONTROL_MAX_MODE=light" in str(rt.control.refused)
        assert rt.mode.value == "light" and detail(client) == "checkpoints"
        # targeted narrows light, but this worker has no secret: nothing is profiled
        cli("enable", "targeted", data_dir=data_dir)
        assert wait_for(lambda: rt.paused == "override_targeted_without_secret")
        assert detail(client) is None
        # an override that ends by itself
        control = json.loads((data_dir / "control.json").read_text())
        control["until"] = time.time() + 0.3
        control["mode"] = "off"
        (data_dir / "control.json").write_text(json.dumps(control))
        assert wait_for(lambda: rt.paused == "override_off:control_file")
        assert wait_for(lambda: rt.paused is None) and detail(client) == "checkpoints"


def test_aggressive_window_is_allowed_up_to_the_ceiling_and_expires(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    settings = make_settings(mode="light", control_max_mode="aggressive", control_poll_interval_s=0.05)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    rt = mw.runtime
    with TestClient(mw) as client:
        assert "aggressive until" in cli("enable", "aggressive", data_dir=data_dir)
        control = json.loads((data_dir / "control.json").read_text())
        assert 29 * 60 < control["until"] - time.time() <= 30 * 60  # a default window, never open-ended
        assert wait_for(lambda: rt.mode.value == "aggressive")
        assert detail(client) == "full"
        control["until"] = time.time() + 0.3
        (data_dir / "control.json").write_text(json.dumps(control))
        assert wait_for(lambda: rt.mode.value == "light", timeout=3)


def test_cli_rejects_bad_arguments_with_one_sentence(data_dir: Path) -> None:
    for args, message in [
        (["enable", "turbo"], "mode 'turbo' is not one of light, aggressive, targeted"),
        (["enable", "light", "--for", "soon"], "is not a duration"),
        (["disable", "--for", "3d"], "longer than the 24h"),
    ]:
        result = run_cli(*args, "--data-dir", str(data_dir))
        assert result.code == 2 and result.stdout == "", result
        assert result.stderr.startswith("memprof: ") and message in result.stderr, result
        assert result.stderr.count("\n") == 1, result


def test_status_shows_each_worker(make_settings: Callable[..., Any], data_dir: Path) -> None:
    settings = make_settings(mode="targeted", targeted_secret=SECRET, control_poll_interval_s=0.05)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    with TestClient(mw) as client:
        client.get("/", headers={"X-Memprof-Profile": "forged.token"})
        dumps = data_dir / "dumps"
        dumps.mkdir(parents=True)
        (dumps / "dump-20261129T170000000000-4242-custom.json").write_text("{}")
        status_file = data_dir / "status" / f"{mw.runtime.host}-{os.getpid()}.json"
        assert wait_for(lambda: status_file.exists())
        poll_now()
        assert wait_for(lambda: json.loads(status_file.read_text())["targeted"].get("malformed") == 1)
        out = cli("status", data_dir=data_dir)
        assert f"{mw.runtime.host}-" in out and "mode targeted, configured targeted" in out
        assert "breaker closed (0/5 failures, 0 trips)" in out
        assert "overhead guard ok" in out and "internal errors 0" in out
        assert "'malformed': 1" in out
        assert "dump-20261129T170000000000-4242-custom.json" in out
        data = json.loads(cli("status", "--json", data_dir=data_dir))
        (worker,) = [w for w in data["workers"] if not w["stale"]]
        assert worker["breaker"]["state"] == "closed" and worker["overhead_guard"]["state"] == "ok"
        assert worker["internal_errors"]["total"] == 0
    assert SECRET not in status_file.read_text()


@pytest.mark.parametrize("bad", ["{not json", '{"mode": "turbo"}', "[]"])
def test_a_broken_control_file_is_ignored(
    make_settings: Callable[..., Any], data_dir: Path, bad: str
) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "control.json").write_text(bad)
    mw = MemprofMiddleware(starlette_app(), settings=make_settings())
    with TestClient(mw) as client:
        assert detail(client) == "full"
    assert mw.runtime.control.override() is None


def test_a_hand_written_aggressive_override_still_expires(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "control.json").write_text(json.dumps({"mode": "aggressive"}))  # no "until"
    settings = make_settings(mode="light", control_max_mode="aggressive")
    rt = MemprofMiddleware(starlette_app(), settings=settings).runtime
    override = rt.control.override()
    assert override is not None and override.mode == "aggressive" and rt.mode.value == "aggressive"
    assert override.until is not None and 29 * 60 < override.until - time.time() <= 30 * 60
    assert not override.live(time.time() + 31 * 60)

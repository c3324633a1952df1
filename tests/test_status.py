"""`memprof status [DIR]` through real uvicorn workers: exact counts after a clean shutdown, stopped and
gone workers told apart, and a full, read-only or unreadable data dir said in one sentence."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._memprof_server import APP_SOURCE, Server, free_port, wait_for
from tests.cli import run_cli
from tests.conftest import fill

FAST = {"MEMPROF_CONTROL_POLL_INTERVAL_S": "0.2"}


def samples_on_disk(data_dir: Path) -> list[bytes]:
    """Every line of every samples file; each one must be a whole record."""
    lines = []
    for path in data_dir.glob("samples-*.jsonl"):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends in a torn line"
        lines.extend(data.splitlines())
    for line in lines:
        json.loads(line)
    return lines


def status_json(data_dir: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("status", str(data_dir), "--json")
    assert result.stdout, result
    return result.code, json.loads(result.stdout)


@pytest.mark.parametrize("mode", ["light", "aggressive"])
def test_after_a_clean_shutdown_status_counts_exactly_the_samples_written(tmp_path: Path, mode: str) -> None:
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, MEMPROF_MODE=mode, MEMPROF_SAMPLE_RATE="0.5", **FAST)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(200):
            client.get("/rss").raise_for_status()
    server.stop()
    code, data = status_json(data_dir)
    assert code == 0 and data["problem"] is None
    (worker,) = data["workers"]
    records = worker["records"]
    assert worker["state"] == "stopped" and worker["stopped"] and worker["pid"] == server.pid
    assert records["written"] == len(samples_on_disk(data_dir)) > 0
    assert worker["profiled"] == records["written"] + records["dropped"] and records["pending"] == 0
    text = run_cli("status", str(data_dir))
    assert "stopped cleanly" in text.stdout and f"written {records['written']}, dropped 0" in text.stdout, (
        text
    )
    by_option = json.loads(run_cli("status", "--data-dir", str(data_dir), "--json").stdout)  # still works
    assert [(w["pid"], w["state"]) for w in by_option["workers"]] == [(server.pid, "stopped")]


def test_a_killed_worker_is_gone_and_a_running_one_is_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    killed = Server(tmp_path / "app", data_dir, **FAST)
    running = Server(tmp_path / "app", data_dir, **FAST)
    try:
        wait_for(lambda: len(list((data_dir / "status").glob("*.json"))) == 2)
        killed.kill()
        code, data = status_json(data_dir)
        states = {w["pid"]: w["state"] for w in data["workers"]}
        assert code == 0 and states == {killed.pid: "gone", running.pid: "running"}
        assert "GONE" in run_cli("status", str(data_dir)).stdout
    finally:
        running.stop()
    _code, data = status_json(data_dir)
    assert {w["pid"]: w["state"] for w in data["workers"]} == {killed.pid: "gone", running.pid: "stopped"}


def test_a_full_disk_drops_whole_records_and_says_so(tmpfs: Path, tmp_path: Path) -> None:
    data_dir = tmpfs / "data"
    server = Server(tmp_path / "app", data_dir, **FAST)
    try:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(20):
                client.get("/rss").raise_for_status()
            wait_for(lambda: status_json(data_dir)[1]["workers"][0]["records"]["written"] == 21)
            filler = fill(tmpfs)
            for _ in range(60):
                assert client.get("/rss").status_code == 200  # the app does not notice
            # The worker's status is still published (rewritten in place) and shows the drops.
            wait_for(lambda: status_json(data_dir)[1]["workers"][0]["records"]["dropped"] > 0)
            code, data = status_json(data_dir)
            (worker,) = data["workers"]
            assert code == 1 and "is full" in data["problem"]
            assert worker["state"] == "running" and worker["breaker"]["state"] == "closed"
            assert worker["records"]["dropped_by_reason"]["write_failed"] > 0
            assert "No space left on device" in worker["records"]["last_error"]
            shown = run_cli("status", str(data_dir))
            assert (
                shown.code == 1
                and shown.stderr.startswith("memprof: data dir ")
                and "is full" in shown.stderr
            )
            assert shown.stderr.count("\n") == 1, shown
            filler.unlink()
            for _ in range(10):
                client.get("/rss").raise_for_status()
    finally:
        server.stop()
    code, data = status_json(data_dir)
    (worker,) = data["workers"]
    records = worker["records"]
    assert code == 0 and worker["state"] == "stopped"
    # No torn line was left or counted: written is exactly what is on disk, the rest was dropped.
    assert records["written"] == len(samples_on_disk(data_dir))
    assert worker["profiled"] == records["written"] + records["dropped"] == 91
    leftovers = [p.name for p in data_dir.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".claim")]
    empty = [p.name for p in data_dir.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert leftovers == [] and empty == []


def test_a_read_only_data_dir_is_said_in_one_sentence(tmpfs: Path, tmp_path: Path) -> None:
    data_dir = tmpfs / "data"
    # No request profiled before the remount: a samples file open for writing would make it fail (EBUSY).
    server = Server(tmp_path / "app", data_dir, **FAST, MEMPROF_MODE="light", MEMPROF_SAMPLE_RATE="0")
    try:
        wait_for(lambda: list((data_dir / "status").glob("*.json")))
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        for _ in range(5):
            server.get("/rss")
        shown = run_cli("status", str(data_dir))
        assert shown.code == 1 and "read-only file system" in shown.stderr and shown.stdout, shown
    finally:
        server.stop()


def test_an_unreadable_data_dir_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "status").mkdir(parents=True)
    repo = Path(__file__).parent.parent
    code = "import sys; from tests.cli import run_cli; r = run_cli('status', sys.argv[1]); print(r.code); print(r.stderr, end='')"
    cmd = [sys.executable, "-c", code, str(data_dir)]
    if os.getuid() == 0:  # root reads anything: run it without the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to drop root's file capabilities")
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *cmd]
    os.chmod(data_dir, 0)
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}
        )
    finally:
        os.chmod(data_dir, 0o700)
    exit_code, message = done.stdout.split("\n", 1)
    assert exit_code == "2", done
    assert message.startswith("memprof: cannot read data dir ") and "Permission denied" in message, done
    assert message.count("\n") == 1


def test_a_missing_data_dir_is_one_sentence(tmp_path: Path) -> None:
    shown = run_cli("status", str(tmp_path / "nowhere"))
    assert shown.code == 2 and "does not exist" in shown.stderr and shown.stdout == "", shown


def test_gunicorn_workers_each_publish_exact_final_counts(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    data_dir = tmp_path / "data"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app_memprof.py").write_text(APP_SOURCE)
    port = free_port()
    env = {
        **os.environ,
        "MEMPROF_DATA_DIR": str(data_dir),
        "MEMPROF_MODE": "light",
        "MEMPROF_SAMPLE_RATE": "0.5",
        "MEMPROF_LOG_EVENTS": "false",
        "PYTHONPATH": os.pathsep.join([str(app_dir), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)
    cmd = [sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2"]
    proc = subprocess.Popen([*cmd, "-b", f"127.0.0.1:{port}", "app_memprof:app"], env=env, cwd=app_dir)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/rss"), timeout=30)
        fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request: both workers serve
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", limits=fresh) as client:
            for _ in range(300):
                client.get("/rss").raise_for_status()
    finally:
        proc.send_signal(signal.SIGTERM)  # gunicorn stops its workers: each runs the lifespan shutdown
        proc.wait(30)
    code, data = status_json(data_dir)
    assert code == 0 and len(data["workers"]) == 2
    assert all(w["state"] == "stopped" and w["records"]["dropped"] == 0 for w in data["workers"])
    written = [w["records"]["written"] for w in data["workers"]]
    assert [w["profiled"] for w in data["workers"]] == written and sum(written) > 0
    assert sum(written) == len(samples_on_disk(data_dir))


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False

"""Several workers share one data dir: the size cap never removes a file a live worker still writes,
and what it removes is counted, so each worker's status adds up with what is on disk."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from memprof.sample_files import STAMP, parse_name, sample_file_name
from memprof.writer import RecordWriter
from tests._memprof_server import Server
from tests.cli import run_cli

CAPS = {
    "MEMPROF_MAX_FILE_MB": "0.05",
    "MEMPROF_MAX_TOTAL_MB": "0.3",
    "MEMPROF_CONTROL_POLL_INTERVAL_S": "0.2",
}


def deleted_samples_files(pid: int) -> list[str]:
    """Samples files ``pid`` holds open although they were deleted."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if "samples-" in target and "(deleted)" in target:
            out.append(target)
    return out


def lines_on_disk(data_dir: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in data_dir.glob("samples-*.jsonl"))


def test_two_uvicorn_workers_with_small_caps_never_lose_an_open_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Server(tmp_path / "app", data_dir, **CAPS)
    second = Server(tmp_path / "app", data_dir, **CAPS)
    servers = (first, second)
    try:
        with httpx.Client(base_url=first.url) as one, httpx.Client(base_url=second.url) as two:
            for _ in range(5):
                one.get("/rss").raise_for_status()
            for i in range(600):
                two.get("/rss").raise_for_status()
                if i % 50 == 0:
                    assert [deleted_samples_files(s.pid) for s in servers] == [[], []]
            for i in range(300):
                one.get("/rss").raise_for_status()
                if i % 50 == 0:
                    assert [deleted_samples_files(s.pid) for s in servers] == [[], []]
            assert [deleted_samples_files(s.pid) for s in servers] == [[], []]
    finally:
        for server in servers:
            server.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700  # the data dir memprof made is private
    result = run_cli("status", str(data_dir), "--json")
    assert result.code == 0, result
    workers = {w["pid"]: w for w in json.loads(result.stdout)["workers"]}
    assert set(workers) == {first.pid, second.pid}
    assert all(w["state"] == "stopped" for w in workers.values())
    counts = {pid: w["records"] for pid, w in workers.items()}
    assert (
        counts[first.pid]["written"] == 306 and counts[second.pid]["written"] == 601
    )  # (+1: the ready probe)
    assert all(c["dropped"] == 0 for c in counts.values())
    removed = sum(c["removed"]["records"] for c in counts.values())
    assert removed > 0 and sum(c["removed"]["files"] for c in counts.values()) > 0
    # What each worker wrote, less what the cap removed, is exactly what is on disk.
    assert sum(c["written"] for c in counts.values()) - removed == lines_on_disk(data_dir)
    on_disk = sum(p.stat().st_size for p in data_dir.glob("samples-*.jsonl"))
    assert on_disk <= 0.3 * 2**20 + 2 * 0.05 * 2**20  # the cap, plus each live worker's open file


def test_the_files_of_a_worker_that_is_gone_are_removed_and_counted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    host = socket.gethostname()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone_pid = int(gone.stdout)  # a real process, ended
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        line = json.dumps({"pad": "x" * 500}).encode() + b"\n"
        files: dict[str, Path] = {}
        for name, (h, pid) in {
            "gone": (host, gone_pid),
            "alive": (host, alive.pid),
            "other_host": ("elsewhere.example", gone_pid),
        }.items():
            # The gone worker's file is old; the live one's carries the time it was written, as a writer's does.
            started = "20200101T000000" if name != "alive" else time.strftime(STAMP, time.gmtime())
            path = data_dir / sample_file_name(started, h, pid, 1)
            path.write_bytes(line * 40 + b'{"torn')  # 40 whole lines and a torn one
            files[name] = path
        (data_dir / "samples-by-hand.jsonl").write_bytes(line * 40)  # not a name memprof writes
        writer = RecordWriter(
            data_dir, max_file_bytes=10_000, max_total_bytes=30_000, queue_size=100, log_events=False
        )
        for i in range(20):
            writer.submit({"i": i, "pad": "y" * 900}, dict)
        assert writer.flush(5)
        writer.close()
    finally:
        alive.kill()
        alive.wait()
    assert not files["gone"].exists()  # its worker is gone: the cap removed it
    assert files["alive"].exists() and files["other_host"].exists()  # a live worker's, another host's
    assert (data_dir / "samples-by-hand.jsonl").exists()
    removed: dict[str, Any] = writer.counts()["removed"]
    assert removed["records"] >= 40 and removed["files"] >= 1
    gone_records = 40
    own_removed = removed["records"] - gone_records
    own_left = sum(
        p.read_bytes().count(b"\n")
        for p in data_dir.glob("samples-*.jsonl")
        if (o := parse_name(p)) and o.pid == os.getpid()
    )
    assert own_left + own_removed == writer.written == 20

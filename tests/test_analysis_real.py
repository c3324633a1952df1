"""The analyzer over records written by the real runtime: samples and a critical dump from a real app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware
from memprof.analysis import analyze


def test_real_samples_and_dump(make_settings: Any, data_dir: Path, samples: Any) -> None:
    api = FastAPI()
    paths: list[str | None] = []

    @api.get("/reports/{report_id}")
    async def report(report_id: int) -> dict[str, int]:
        with memprof.checkpoint("build_report"):
            rows = [bytearray(1024) for _ in range(report_id)]
        return {"rows": len(rows)}

    @api.post("/debug/dump")
    async def take_dump() -> dict[str, str | None]:
        paths.append(memprof.dump("on_demand"))
        return {"path": paths[-1]}

    app = MemprofMiddleware(api, settings=make_settings())
    with TestClient(app) as client:
        for i in range(20):
            assert client.get(f"/reports/{i * 50}").status_code == 200
        assert client.post("/debug/dump").status_code == 200
    assert len(samples()) == 21 and paths[0]
    summary = analyze([str(data_dir)]).summary
    assert summary["input"]["skipped"] == 0
    assert summary["input"]["records"]["sample"] == 21 and summary["input"]["records"]["dump"] == 1
    routes = {r["route"]: r for r in summary["routes"]}
    assert routes["/reports/{report_id}"]["count"] == 20
    assert "build_report" in {p["phase"] for p in summary["phases"]}
    dump = summary["dumps"]["list"][0]
    assert (dump["trigger"], dump["name"], dump["route"]) == ("custom", "on_demand", "/debug/dump")
    assert Path(dump["ref"]) == Path(str(paths[0]))
    assert summary["dumps"]["frames"]  # stacks of the threads, counted


def test_flight_file_of_a_dead_worker_is_reported_and_left_alone(tmp_path: Path) -> None:
    import json
    import os
    import socket
    import subprocess
    import sys
    import time

    from memprof.analysis import synthetic as s

    d = tmp_path / "data"
    s.write_jsonl(d / "samples-1.jsonl", [s.sample("/r")])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    host, now = socket.gethostname(), time.time()
    files = []
    for pid in (int(dead.stdout), os.getpid()):  # a worker gone, and one alive (this process)
        doc = {"schema": "memprof.worker", "version": "1.0", "pid": pid, "host": host, "worker": f"{host}:{pid}",
               "started": now - 60, "last_seen": now - 1, "rss": 900 * 1024 * 1024, "peak": None,
               "limit": 1024 * 1024 * 1024, "inflight_total": 1,
               "inflight": [{"id": "x", "method": "POST", "path": "/import", "route": "/import", "started": now - 2,
                             "rss_start": 500 * 1024 * 1024}]}  # fmt: skip
        path = d / "workers" / f"{host}-{pid}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc))
        files.append(path)
    summary = analyze([str(d)]).summary
    (crash,) = summary["crashes"]
    assert crash["pid"] == int(dead.stdout) and crash["inflight"][0]["route"] == "/import"
    assert Path(crash["ref"]) == files[0]
    assert summary["findings"][0]["kind"] == "worker_killed"
    assert summary["findings"][0]["title"].endswith("in flight: /import")
    assert all(f.exists() for f in files) and not (d / "crashes").exists()  # nothing written or moved

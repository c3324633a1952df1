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

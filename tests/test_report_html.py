"""The HTML report in a real headless Chromium: it loads without JavaScript errors and draws its charts."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from memprof.analysis.report_html import render, report_data
from tests.cli import run_cli
from tests.conftest import IN_CI

MIB = s.MIB
EVIL_ROUTE = "/x/</script><script>window.pwned=1</script>"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if IN_CI:
        pytest.fail(
            "chromium is not installed (apt-get install -y chromium): the HTML report cannot be tested"
        )
    pytest.skip("chromium is not installed")


def dump_dom(page: Path, tmp_path: Path) -> str:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


class Elements(html.parser.HTMLParser):
    """Every start tag of the rendered DOM, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def having(self, cls: str) -> list[dict[str, str | None]]:
        return [a for _t, a in self.tags if cls in (a.get("class") or "").split()]

    def by_id(self, ident: str) -> dict[str, str | None]:
        return next(a for _t, a in self.tags if a.get("id") == ident)


def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    recs = []
    for i in range(300):
        admin = i % 10 == 0
        route = "/admin/report" if admin else ("/items/{item_id}" if i % 3 else EVIL_ROUTE)
        recs.append(s.sample(route, t=s.T0 + i, rss=200 * MIB + i * 300 * 1024, worker=f"api-1:{100 + i % 2}",
                             growth=60 * MIB if admin else 16384))  # fmt: skip
    s.write_jsonl(d / "samples-20261129T100000-100-0001.jsonl", recs)
    for j, t in enumerate((120, 260)):
        s.write_json(d / "dumps" / f"dump-{j}-100-threshold.json",
                     s.dump(t=s.T0 + t, worker="api-1:100", rss=900 * MIB, route="/admin/report"))  # fmt: skip
    s.write_json(
        d / "crashes" / "crash-101.json",
        s.crash(worker="api-1:101", last_seen=s.T0 + 299, inflight=["/admin/report"]),
    )
    return d


def test_report_draws_its_charts_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", str(data_dir(tmp_path)), "--html", str(out), "--title", "API <prod>")
    assert result.code == 0, result
    page = out.read_text()
    assert "<script src" not in page and "<link" not in page  # self-contained: nothing to fetch
    dom = Elements()
    dom.feed(dump_dom(out, tmp_path))
    status = dom.by_id("memprof-status")
    assert (status["data-state"], status["data-errors"], status["data-charts"]) == ("drawn", "0", "3")
    lines = dom.having("worker-line")
    assert sorted(str(x["data-worker"]) for x in lines) == ["api-1:100", "api-1:101"]
    assert all(len(str(x["points"]).split()) == 150 for x in lines)
    assert len(dom.having("dump-marker")) == 2 and len(dom.having("crash-marker")) == 1
    assert len(dom.having("limit")) == 1
    assert len(dom.having("route-box")) == 3  # one box per route, the hostile one included
    assert len(dom.having("phase-bar")) == 4
    findings = [a for _t, a in dom.tags if "finding" in (a.get("class") or "").split()]
    summary = analyze([str(tmp_path / "data")]).summary
    assert [f["data-kind"] for f in findings] == [f["kind"] for f in summary["findings"]]
    assert findings[0]["data-kind"] == "worker_killed"


def test_hostile_text_stays_text(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text(render(*report_data([str(data_dir(tmp_path))]), title="<b>t</b>"))
    rendered = dump_dom(out, tmp_path)
    # shown as text in the table, and no script element was injected
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in rendered
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in rendered
    dom = Elements()
    dom.feed(rendered)
    assert [a.get("id") for t, a in dom.tags if t == "script"] == ["memprof-data", None]
    assert dom.by_id("memprof-status")["data-errors"] == "0"


def test_report_of_samples_without_dumps_or_limit(tmp_path: Path) -> None:
    d = tmp_path / "d"
    s.write_jsonl(d / "samples-1.jsonl", [s.sample(t=s.T0 + i, limit=None) for i in range(3)])
    out = tmp_path / "r.html"
    out.write_text(render(*report_data([str(d)])))
    dom = Elements()
    dom.feed(dump_dom(out, tmp_path))
    status: dict[str, Any] = dom.by_id("memprof-status")
    assert (status["data-state"], status["data-charts"]) == ("drawn", "3")
    assert dom.having("limit") == [] and len(dom.having("worker-line")) == 1
    embedded = json.loads(out.read_text().split('id="memprof-data">')[1].split("</script>")[0])
    assert embedded["summary"]["samples"] == 3


def test_report_of_a_thousand_workers_draws_every_chart(tmp_path: Path) -> None:
    """1,000 recycled worker ids, 150,000 samples: the page draws (a band and the top workers, not 1,000
    lines), and the axis follows the data with a limit far above it named instead of drawn."""
    d = tmp_path / "fleet"
    d.mkdir()
    line = json.dumps(s.sample("/items/{item_id}", rss=300 * MIB, limit=2048 * MIB))
    with (d / "samples-1.jsonl").open("w") as fh:
        for i in range(150_000):
            worker = i % 1000
            rss = 200 * MIB + worker * 100_000 + (i // 1000) * 50_000
            fh.write(line.replace('"api-1:100"', f'"api-{worker // 100}:{worker}"')
                     .replace(f'"time": {s.T0}', f'"time": {s.T0 + i * 0.5}').replace("314572800", str(rss)) + "\n")  # fmt: skip
    out = tmp_path / "r.html"
    result = run_cli("report", str(d), "--html", str(out))
    assert result.code == 0, result
    page = out.read_text()
    assert len(page) < 2_000_000  # aggregated: not 150,000 points
    dom = Elements()
    dom.feed(dump_dom(out, tmp_path))
    status = dom.by_id("memprof-status")
    assert (status["data-state"], status["data-errors"], status["data-charts"]) == ("drawn", "0", "3")
    assert len(dom.having("worker-band")) == 1 and len(dom.having("worker-median")) == 1
    assert len(dom.having("worker-line")) == 5
    assert (
        dom.having("limit") == [] and len(dom.having("limit-off")) == 1
    )  # 2 GiB: far above ~300 MiB of data
    embedded = json.loads(page.split('id="memprof-data">')[1].split("</script>")[0])
    assert embedded["charts"]["workers"] == 1000 and embedded["summary"]["samples"] == 150_000

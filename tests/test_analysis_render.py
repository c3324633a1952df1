"""Renderers against their exact output: the text summary, recent samples, compare, JSON."""

from __future__ import annotations

import json
from pathlib import Path

from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from memprof.analysis.compare import compare
from memprof.analysis.render_json import render as render_json
from memprof.analysis.render_text import fmt_bytes, render_summary, table
from memprof.analysis.render_views import render_compare, render_recent, render_tail_event

MIB = s.MIB


def _data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    lazy = s.statement("SELECT tags.id FROM tags WHERE ? = tags.item_id", 12, rows=12, instances=12,
                       n_plus_one=True, frame="app/views.py:42 in items")  # fmt: skip
    recs = [s.sample("/items/{item_id}", t=s.T0 + i, growth=(i % 4) * MIB) for i in range(8)]
    recs.append(s.sample("/admin/export", t=s.T0 + 8, growth=90 * MIB, queries=s.queries(lazy),
                         session=s.session(2048, {"cart": 1500, "user_id": 8}, "h1")))  # fmt: skip
    s.write_jsonl(d / "samples-1.jsonl", recs)
    with (d / "samples-1.jsonl").open("a") as fh:
        fh.write('{"schema": "memprof.sample", "version": "1.0", "ti')
    s.write_json(d / "crashes" / "crash-1.json", s.crash(last_seen=s.T0 + 9, inflight=["/admin/export"]))
    return d


EXPECTED_SUMMARY = """\
memprof analysis: 2 files, 10 lines read; 1 crash, 9 samples
Skipped 1 bad line or file (truncated line 1):
  samples-1.jsonl:10 truncated line
Window: 2025-11-29 07:06:40Z .. 2025-11-29 07:06:48Z   memory limit: 1.00 GiB

Findings (2: 1 critical, 1 warning)
  [critical] worker_killed: Worker api-1:100 was killed at 98% of its limit with 1 request(s) in flight: /admin/export (at stake: 1000.0 MiB)
      evidence: worker=api-1:100 last_rss=1000.0 MiB limit=1.00 GiB uptime_s=600 last_seen=2025-11-29 07:06:49Z
      records: crash-1.json
      fix: The kernel's OOM killer or the supervisor killed it; the requests in flight are the suspects: run `memprof analyze --route '/admin/export'` and reproduce with `memprof reproduce`; give the container headroom and recycle workers (gunicorn `--max-requests`) while the cause is fixed.
  [warning] n_plus_one: N+1 at app/views.py:42 in items: 1 statement repeated up to 12 times per request (median 12) in 1 request on 1 route
      evidence: site=app/views.py:42 in items is_loop=False lazy=False max_per_request=12 median_per_request=12 requests=1 overlapping_requests=0
      routes: /admin/export
      statement [fbc2cfe1]: SELECT tags.id FROM tags WHERE ? = tags.item_id
      records: samples-1.jsonl:9
      fix: Batch the calls at app/views.py:42 in items: fetch every item with one query (`WHERE id IN (...)`, `select(Model).where(Model.id.in_(ids))`) and write with one bulk statement (`session.execute(update(Model), [...])`, `insert(Model).values([...])`) instead of one call per item.

Memory per request (growth: the request's peak minus its start, from the heap where recorded, else from RSS at checkpoints and SQL statements; rss: peak RSS)
          count       mean        min        p50        p95        p99        max       std
  rss         9  111.3 MiB  100.0 MiB  102.0 MiB  190.0 MiB  190.0 MiB  190.0 MiB  27.8 MiB
  growth      9   11.3 MiB        0 B    2.0 MiB   90.0 MiB   90.0 MiB   90.0 MiB  27.8 MiB

Routes (high: growth >= 90.0 MiB, the overall p95)
  route             count  high  share  growth p50       p95       max    rss p95  dumps
  /admin/export         1     1   100%    90.0 MiB  90.0 MiB  90.0 MiB  190.0 MiB      0
  /items/{item_id}      8     0     0%     1.0 MiB   3.0 MiB   3.0 MiB  103.0 MiB      0

Phases (checkpoint intervals; high: the phase that grew most in a high-memory request)
  phase                        count      mean       max  high
  app_start→response_start         9  11.3 MiB  90.0 MiB     1
  request_start→app_start          9       0 B       0 B     0
  response_end→request_end         9       0 B       0 B     0
  response_start→response_end      9       0 B       0 B     0

Workers
  worker     samples                 first  rss first       last        max
  api-1:100        9  2025-11-29 07:06:40Z  100.0 MiB  190.0 MiB  190.0 MiB

Sessions: 1 request, 1 session; size p50 2 KiB, p95 2 KiB, max 2 KiB
  largest keys  max size  seen
  cart             1 KiB     1
  user_id            8 B     1

SQL hot spots (1 distinct statement)
  statement (by time)                              runs  requests   ms  max/req  objects  max rss
  SELECT tags.id FROM tags WHERE ? = tags.item_id    12         1  6.0       12       12      0 B

Crashes (workers killed, from the flight recorder): 1
  2025-11-29 07:06:49Z api-1:100 rss 1000.0 MiB of 1.00 GiB; in flight: GET /admin/export
"""


def test_summary_text_exact(tmp_path: Path) -> None:
    assert render_summary(analyze([str(_data(tmp_path))]).summary) == EXPECTED_SUMMARY


EXPECTED_RECENT = """\
2 most recent samples (newest first)
  2025-11-29 07:06:48Z api-1:100 GET /admin/export 200 5.0 ms  rss 100.0 MiB -> 190.0 MiB (peak +90.0 MiB) 12 queries session 2 KiB  [samples-1.jsonl:9]
          0.0 ms  request_start            rss 100.0 MiB
          1.0 ms  app_start                rss 100.0 MiB (+0 B)
          2.0 ms  response_start           rss 190.0 MiB (+90.0 MiB)
          3.0 ms  response_end             rss 190.0 MiB (+0 B)
          4.0 ms  request_end              rss 190.0 MiB (+0 B)
    sql x12 N+1 rows 12 objects 12 +0 B: SELECT tags.id FROM tags WHERE ? = tags.item_id
    session 2 KiB: cart 1 KiB, user_id 8 B
  2025-11-29 07:06:47Z api-1:100 GET /items/{item_id} 200 5.0 ms  rss 100.0 MiB -> 103.0 MiB (peak +3.0 MiB)  [samples-1.jsonl:8]
"""


def test_recent_text_exact(tmp_path: Path) -> None:
    result = analyze([str(_data(tmp_path))], recent=2)
    records = result.recent_records()
    text = render_recent(records, details=True)
    # the details of the second sample are its five checkpoints; compare the first one's exactly
    assert text.startswith(EXPECTED_RECENT.rsplit("\n  2025", 1)[0])
    assert (
        render_recent(records)
        == "\n".join(line for line in EXPECTED_RECENT.splitlines() if not line.startswith("    ")) + "\n"
    )
    assert render_recent([]) == "No samples match.\n"


def test_compare_text_exact() -> None:
    base = {"samples": 40, "memory": {"growth": _st(20, 8 * MIB, MIB), "rss": _st(20, 100 * MIB, MIB)},
            "routes": [{"route": "/a", "growth": _st(20, 8 * MIB, MIB), "rss": _st(20, 100 * MIB, MIB)},
                       {"route": "/old", "growth": _st(20, MIB, 0), "rss": _st(20, 100 * MIB, 0)}],
            "findings": [{"kind": "n_plus_one", "severity": "warning", "subject": "SELECT 1", "title": "N+1 query"}]}  # fmt: skip
    post = {"samples": 20, "memory": {"growth": _st(20, 2 * MIB, MIB), "rss": _st(20, 100 * MIB, MIB)},
            "routes": [{"route": "/a", "growth": _st(20, 2 * MIB, MIB), "rss": _st(20, 95 * MIB, MIB)}],
            "findings": []}  # fmt: skip
    assert render_compare(compare(base, post)) == (
        "Verdict: BETTER  (baseline 40 samples, postfix 20)\n"
        "  growth: mean 8.0 MiB -> 2.0 MiB (-6.0 MiB), p95 -6.0 MiB, max -6.0 MiB: better (p=0.000, effect -6.0)\n"
        "  rss: mean 100.0 MiB -> 100.0 MiB (0 B), p95 0 B, max 0 B: unchanged\n"
        "\n"
        "Per route (memory per request: its peak minus its start, heap where recorded; a verdict needs 10 "
        "requests on each side and p < 0.01)\n"
        "  route  n before  n after  mean before    after     delta  delta p95                        verdict\n"
        "  /a           20       20      8.0 MiB  2.0 MiB  -6.0 MiB   -6.0 MiB  better (p=0.000, effect -6.0)\n"
        "  /old         20        -      1.0 MiB        -         -          -                           gone\n"
        "\n"
        "Findings resolved:\n"
        "  [warning] n_plus_one: N+1 query\n"
    )


def _st(n: int, mean: float, std: float) -> dict[str, float]:
    return {
        "count": n,
        "mean": mean,
        "p50": mean,
        "p95": mean,
        "max": mean,
        "variance": std * std,
        "std": std,
    }


def test_compare_noise_band() -> None:
    def one(mean_after: float, std: float) -> str:
        base = {"samples": 1, "memory": {"growth": _st(30, 10 * MIB, std), "rss": _st(30, 10 * MIB, std)},
                "routes": [], "findings": []}  # fmt: skip
        post = {"samples": 1, "memory": {"growth": _st(30, mean_after, std), "rss": _st(30, mean_after, std)},
                "routes": [], "findings": []}  # fmt: skip
        return str(compare(base, post)["verdict"])

    assert one(10.3 * MIB, 0) == "unchanged"  # within 5% of the baseline
    assert one(12 * MIB, 0) == "worse"
    assert one(12 * MIB, 4 * MIB) == "unchanged"  # 2 MiB apart, but 2 standard errors are 2.07 MiB
    assert one(7 * MIB, 4 * MIB) == "better"


def test_tail_lines_exact() -> None:
    rec = s.sample("/r", growth=40 * MIB)
    assert render_tail_event("memprof.sample", rec, high=True) == (
        "!! 2025-11-29 07:06:40Z api-1:100 GET /r 200 5.0 ms  rss 100.0 MiB -> 140.0 MiB (peak +40.0 MiB)"
    )
    assert render_tail_event("memprof.dump", s.dump(route="/r"), high=True) == (
        "!! 2025-11-29 07:06:40Z api-1:100 DUMP threshold rss 900.0 MiB (87.89% of limit) route /r"
    )
    assert render_tail_event("memprof.crash", s.crash(inflight=["/r"]), high=True) == (
        "!! 2025-11-29 07:06:40Z api-1:100 KILLED rss 1000.0 MiB; in flight: /r"
    )


def test_json_is_stable_and_sorted(tmp_path: Path) -> None:
    summary = analyze([str(_data(tmp_path))]).summary
    text = render_json(summary)
    assert text == render_json(json.loads(text)) and text.endswith("}\n")
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_helpers() -> None:
    assert [fmt_bytes(v) for v in (None, 0, 1023, 2048, 5 * MIB, -3 * MIB, 3 * 1024 * MIB)] == [
        "-", "0 B", "1023 B", "2 KiB", "5.0 MiB", "-3.0 MiB", "3.00 GiB"]  # fmt: skip
    assert table(["a", "n"], [["x", 1], ["long", 22]]) == ["  a      n", "  x      1", "  long  22"]


def test_compare_persisting_finding_shows_what_changed() -> None:
    def side(per_request: int, rss: int) -> dict:
        finding = {"kind": "n_plus_one", "severity": "warning", "subject": "SELECT b", "title": "N+1 query",
                   "evidence": {"max_per_request": per_request, "rss_delta": rss, "lazy": True, "records": []}}  # fmt: skip
        return {"samples": 10, "memory": {"growth": _st(10, MIB, 0), "rss": _st(10, MIB, 0)}, "routes": [],
                "findings": [finding]}  # fmt: skip

    result = compare(side(48, 8 * MIB), side(12, 2 * MIB))
    assert result["findings"]["persisting"][0]["changes"] == {
        "max_per_request": [48, 12],
        "rss_delta": [8 * MIB, 2 * MIB],
    }
    assert render_compare(result).endswith(
        "Findings persisting:\n  [warning] n_plus_one: N+1 query\n      max_per_request 48 -> 12, rss_delta 8.0 MiB -> 2.0 MiB\n"
    )

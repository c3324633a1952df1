"""Plain-text rendering of an analysis summary (the default ``memprof analyze`` view).

Pure: a summary dict in, a string out, deterministic (tests compare it exactly). Colour, if any, is
added by the command, never here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from memprof.analysis.render_sql import cuts, one_line

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB


def fmt_bytes(value: float | None) -> str:
    """``12.3 MiB``, ``512 KiB``, ``1.5 GiB``; ``-`` for None. Signed values keep their sign."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= GIB:
        return f"{sign}{v / GIB:.2f} GiB"
    if v >= MIB:
        return f"{sign}{v / MIB:.1f} MiB"
    if v >= KIB:
        return f"{sign}{v / KIB:.0f} KiB"
    return f"{sign}{v:.0f} B"


def fmt_time(t: float | None) -> str:
    """UTC ``2026-11-29 14:03:07Z``; ``-`` for None."""
    if t is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))
    except (OverflowError, ValueError, OSError, TypeError):  # a corrupt record's time
        return str(t)


def short_ref(ref: str | None) -> str:
    """A record reference without its directories: ``samples-x.jsonl:12``."""
    if not ref:
        return "-"
    return os.path.basename(ref)


def plural(n: int, word: str) -> str:
    """``1 sample``, ``2 samples``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Aligned columns: the first left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for r in cells:
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        out.append((indent + "  ".join(parts)).rstrip())
    return out


def _evidence_line(evidence: dict[str, Any]) -> str:
    parts = []
    for key, value in evidence.items():
        if key in (
            "records",
            "statement",
            "routes",
            "inflight",
            "growing",
            "largest_keys",
            "growing_sessions",
        ):
            continue
        if isinstance(value, dict | list) or key == "impact_bytes":
            continue
        if key in ("last_seen", "time", "started") and isinstance(value, int | float):
            parts.append(f"{key}={fmt_time(value)}")
        elif isinstance(value, int | float) and not isinstance(value, bool) and _is_bytes(key):
            parts.append(f"{key}={fmt_bytes(value)}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:g}")
        elif value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _is_bytes(key: str) -> bool:
    return any(
        w in key for w in ("rss", "growth", "size", "limit", "delta", "bytes", "retained_per")
    ) and not key.endswith(("_share", "_r"))


def render_findings(findings: list[dict[str, Any]], *, details: bool = False) -> list[str]:
    """The findings as text; statements cut where they differ (whole with ``details``), with the short id
    the JSON shares, routes counted (the whole list with ``details`` and in JSON)."""
    if not findings:
        return ["Findings: none (no pattern of a memory problem in these records)"]
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    head = ", ".join(f"{n} {sev}" for sev, n in counts.items())
    lines = [f"Findings ({len(findings)}: {head})"]
    for f in findings:
        impact = f" (at stake: {fmt_bytes(f['impact_bytes'])})" if f.get("impact_bytes") else ""
        lines.append(f"  [{f['severity']}] {f['kind']}: {one_line(f['title'])}{impact}")
        ev = f["evidence"]
        line = _evidence_line(ev)
        if line:
            lines.append(f"      evidence: {line}")
        routes = [str(r) for r in ev.get("routes") or ()]
        if routes:
            shown = (
                routes if details or len(routes) <= 3 else [*routes[:3], f"... ({len(routes)} routes in all)"]
            )
            lines.append(f"      routes: {', '.join(shown)}")
        if ev.get("see"):
            lines.append(f"      see: {'; '.join(ev['see'])}")
        stmts = ev.get("statements") or (
            [{"sql": ev["statement"], "id": ev.get("id")}] if ev.get("statement") else []
        )
        texts = [one_line(x["sql"]) for x in stmts] if details else cuts([x["sql"] for x in stmts])
        for x, text in zip(stmts, texts, strict=True):
            lines.append(f"      statement [{x.get('id') or '-'}]: {text}")
        if ev.get("records"):
            lines.append(f"      records: {', '.join(short_ref(r) for r in ev['records'])}")
        lines.append(f"      fix: {f['fix']}")
    return lines


def _stat_row(label: str, s: dict[str, Any]) -> list[Any]:
    return [label, s["count"], *(fmt_bytes(s[k]) for k in ("mean", "min", "p50", "p95", "p99", "max", "std"))]


def render_summary(summary: dict[str, Any], *, details: bool = False) -> str:
    """The whole summary as text, sections in the order a reader needs them (``details``: statements
    whole, every route of a finding)."""
    inp = summary["input"]
    rec = inp["records"]
    kinds = ", ".join(plural(n, k) for k, n in rec.items())
    lines = [
        f"memprof analysis: {plural(inp['files'], 'file')}, {plural(inp['lines'], 'line')} read; {kinds or 'no records'}"
    ]
    if inp["skipped"]:
        reasons = ", ".join(f"{k} {v}" for k, v in inp["skipped_by_reason"].items())
        what = "bad line or file" if inp["skipped"] == 1 else "bad lines or files"
        lines.append(f"Skipped {inp['skipped']} {what} ({reasons}):")
        lines += [f"  {short_ref(p['file'])}:{p['line'] or '-'} {p['reason']}" for p in inp["problems"][:5]]
    if inp["ignored_lines"]:
        lines.append(f"Ignored {plural(inp['ignored_lines'], 'log line')} that are not memprof records")
    active = {k: v for k, v in summary["filters"].items() if v is not None}
    if active:
        lines.append("Filters: " + " ".join(f"{k}={v}" for k, v in active.items())
                     + f" ({summary['filtered_out']} records left out)")  # fmt: skip
    w = summary["window"]
    lines.append(
        f"Window: {fmt_time(w['start'])} .. {fmt_time(w['end'])}   memory limit: {fmt_bytes(summary['limit'])}"
    )
    lines.append("")
    lines += render_findings(summary["findings"], details=details)
    lines += ["", f"SQL: {hint}."] if (hint := (summary.get("sql_status") or {}).get("hint")) else []
    if summary["samples"]:
        lines += [
            "",
            "Memory per request (growth: the request's peak minus its start, from the heap where "
            "recorded, else from RSS at checkpoints and SQL statements; rss: peak RSS)",
        ]
        lines += table(["", "count", "mean", "min", "p50", "p95", "p99", "max", "std"],
                       [_stat_row("rss", summary["memory"]["rss"]),
                        _stat_row("growth", summary["memory"]["growth"])])  # fmt: skip
        hm = summary["high_memory"]
        lines += ["", f"Routes (high: growth >= {fmt_bytes(hm['threshold'])}, the overall p95)"]
        rows = [[r["route"], r["count"], r["high"], f"{r['high_share']:.0%}", fmt_bytes(r["growth"]["p50"]),
                 fmt_bytes(r["growth"]["p95"]), fmt_bytes(r["growth"]["max"]), fmt_bytes(r["rss"]["p95"]),
                 r["dumps"]] for r in summary["routes"][:15]]  # fmt: skip
        lines += table(
            ["route", "count", "high", "share", "growth p50", "p95", "max", "rss p95", "dumps"], rows
        )
        if len(summary["routes"]) > 15:
            lines.append(f"  ... {len(summary['routes']) - 15} more routes (--json lists all)")
        lines += [
            "",
            "Phases (checkpoint intervals; high: the phase that grew most in a high-memory request)",
        ]
        rows = [[p["phase"], p["count"], fmt_bytes(p["mean"]), fmt_bytes(p["max"]), p["high"]]
                for p in summary["phases"][:12]]  # fmt: skip
        lines += table(["phase", "count", "mean", "max", "high"], rows)
        lines += ["", "Workers"]
        rows = [[x["worker"], x["samples"], fmt_time(x["first_time"]), fmt_bytes(x["rss_first"]),
                 fmt_bytes(x["rss_last"]), fmt_bytes(x["rss_max"])] for x in summary["workers"][:20]]  # fmt: skip
        lines += table(["worker", "samples", "first", "rss first", "last", "max"], rows)
    lines += _sessions(summary.get("sessions"))
    lines += _sql(summary.get("sql"))
    lines += _dumps(summary["dumps"])
    lines += _crashes(summary["crashes"])
    lines += _caches(summary["caches"])
    lines += _sql_outside(summary.get("sql_outside_requests"))
    return "\n".join(lines) + "\n"


def _sql_outside(s: dict[str, Any] | None) -> list[str]:
    if not s or not s["count"]:
        return []
    head = (f"SQL outside profiled requests (start-up, jobs, unsampled requests): {plural(s['count'], 'statement')}, "
            f"{s['total_ms']:.0f} ms over {plural(s['workers'], 'worker')}")  # fmt: skip
    rows = [[x["count"], f"{x['total_ms']:.1f}", one_line(x["sql"])[:90]] for x in s["statements"][:5]]
    return ["", head, *table(["count", "ms", "statement"], rows)]


def _sessions(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    size = s["size"]
    lines = ["", f"Sessions: {plural(s['requests'], 'request')}, {plural(s['sessions'], 'session')}; size p50 {fmt_bytes(size['p50'])}, "
             f"p95 {fmt_bytes(size['p95'])}, max {fmt_bytes(size['max'])}"]  # fmt: skip
    if s["largest_keys"]:
        lines += table(["largest keys", "max size", "seen"],
                       [[k["key"], fmt_bytes(k["max_size"]), k["seen"]] for k in s["largest_keys"][:5]])  # fmt: skip
    return lines


def _sql(q: dict[str, Any] | None) -> list[str]:
    if not q:
        return []
    lines = ["", f"SQL hot spots ({plural(q['distinct_statements'], 'distinct statement')})"]
    rows = [[one_line(st["sql"])[:60], st["executions"], st["requests"], f"{st['total_ms']:.1f}",
             st["max_per_request"], st["instances"], fmt_bytes(st["max_rss_delta"])] for st in q["by_time"][:8]]  # fmt: skip
    lines += table(["statement (by time)", "runs", "requests", "ms", "max/req", "objects", "max rss"], rows)
    if q["models"]:
        lines += ["", "Models loaded"]
        rows = [
            [m["model"], m["loaded"], m["requests"], m["max_loaded"], m["created"]] for m in q["models"][:8]
        ]
        lines += table(["model", "loaded", "requests", "max/req", "created"], rows)
    if q["scopes"]:
        lines += ["", "Loader criteria"]
        rows = [[f"{s['model']} {s['criteria']}"[:70], s["applied"], s["max_applied"], s["duplicates"]]
                for s in q["scopes"][:8]]  # fmt: skip
        lines += table(["criteria", "applied", "max/req", "duplicates"], rows)
    return lines


def _dumps(d: dict[str, Any]) -> list[str]:
    if not d["count"]:
        return []
    triggers = ", ".join(f"{k} {v}" for k, v in d["by_trigger"].items())
    lines = ["", f"Dumps: {d['count']} ({triggers})"]
    rows = [[fmt_time(x["time"]), x["worker"], x["trigger"], fmt_bytes(x["rss"]),
             f"{x['percent']:.0f}%" if x["percent"] is not None else "-", x["route"] or "-",
             short_ref(x["ref"])] for x in d["list"][-10:]]  # fmt: skip
    lines += table(["time", "worker", "trigger", "rss", "limit%", "route", "file"], rows)
    if d["routes"]:
        lines.append("  routes in the dumps: " + ", ".join(f"{k} ({v})" for k, v in d["routes"].items()))
    if d["frames"]:
        lines += ["  most common stack frames (application code first):"]
        lines += [f"    {f['dumps']:>4}  {f['frame']}" for f in d["frames"][:10]]
    return lines


def _crashes(crashes: list[dict[str, Any]]) -> list[str]:
    if not crashes:
        return []
    lines = ["", f"Crashes (workers killed, from the flight recorder): {len(crashes)}"]
    for c in crashes[-10:]:
        routes = ", ".join(f"{r['method']} {r['route']}" for r in c["inflight"]) or "nothing"
        lines.append(f"  {fmt_time(c['last_seen'])} {c['worker']} rss {fmt_bytes(c['last_rss'])} of "
                     f"{fmt_bytes(c['limit'])}; in flight: {routes}")  # fmt: skip
    return lines


def _caches(caches: list[dict[str, Any]]) -> list[str]:
    if not caches:
        return []
    rows = [[c["name"], c["worker"], c["maxsize"] if c["maxsize"] is not None else "none", c["first"], c["last"],
             c["observations"]] for c in caches[:10]]  # fmt: skip
    return ["", "Caches", *table(["cache", "worker", "maxsize", "first", "last", "seen"], rows)]

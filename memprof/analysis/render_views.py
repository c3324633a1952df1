"""Plain-text rendering of the smaller views: recent samples (``--recent N --details``), compare, tail."""

from __future__ import annotations

from typing import Any

from memprof.analysis.render_text import fmt_bytes, fmt_time, short_ref, table


def sample_line(rec: dict[str, Any]) -> str:
    """One sample in one line: time, worker, request, memory and what it did."""
    req, mem = rec.get("request") or {}, rec.get("memory") or {}
    peak = max(
        [int(mem.get("rss_end") or 0), *(int(c.get("rss") or 0) for c in rec.get("checkpoints") or ())]
    )
    growth = peak - int(mem.get("rss_start") or 0)
    q = rec.get("queries") or {}
    extra = f" {q.get('count')} queries" if q else ""
    s = rec.get("session")
    extra += f" session {fmt_bytes(s.get('size'))}" if s else ""
    shared = " (shared)" if mem.get("shared") else ""
    return (
        f"{fmt_time(rec.get('time'))} {rec.get('worker')} {req.get('method')} {req.get('route')} {req.get('status')} "
        f"{float(req.get('duration_ms') or 0):.1f} ms  rss {fmt_bytes(mem.get('rss_start'))} -> "
        f"{fmt_bytes(mem.get('rss_end'))} (peak +{fmt_bytes(growth)}{shared}){extra}"
    )


def sample_details(rec: dict[str, Any]) -> list[str]:
    """The full detail of one sample: checkpoints, statements, models, criteria, session keys."""
    lines = []
    prev = None
    for cp in rec.get("checkpoints") or ():
        step = (
            f" ({'+' if prev is not None and cp['rss'] >= prev else ''}{fmt_bytes(cp['rss'] - prev)})"
            if prev is not None
            else ""
        )
        lines.append(f"    {cp['ms']:>9.1f} ms  {cp['name']:<24} rss {fmt_bytes(cp['rss'])}{step}")
        prev = cp["rss"]
    q = rec.get("queries") or {}
    for st in (q.get("statements") or [])[:10]:
        flag = " N+1" if st.get("n_plus_one") else ""
        lines.append(f"    sql x{st.get('count')}{flag} rows {st.get('rows', 0)} objects {st.get('instances', 0)} "
                     f"+{fmt_bytes(st.get('rss_delta_max', 0))}: {' '.join(str(st.get('sql')).split())[:100]}")  # fmt: skip
    for name, m in ((rec.get("models") or {}).get("classes") or {}).items():
        lines.append(f"    model {name}: loaded {m.get('loaded', 0)} created {m.get('created', 0)}")
    for cls, items in ((rec.get("scopes") or {}).get("classes") or {}).items():
        for it in items:
            lines.append(f"    criteria {cls}: {it.get('criteria')} applied {it.get('applied')}")
    s = rec.get("session")
    if s:
        keys = ", ".join(f"{k['key']} {fmt_bytes(k['size'])}" for k in s.get("largest") or ())
        lines.append(f"    session {fmt_bytes(s.get('size'))}: {keys}")
    return lines


def render_recent(records: list[tuple[dict[str, Any], str]], *, details: bool = False) -> str:
    """The most recent samples, newest first."""
    if not records:
        return "No samples match.\n"
    lines = [f"{len(records)} most recent samples (newest first)"]
    for rec, ref in records:
        try:
            lines.append(f"  {sample_line(rec)}  [{short_ref(ref)}]")
            if details:
                lines += sample_details(rec)
        except (TypeError, ValueError, KeyError, AttributeError):  # a record the analysis accepted but odd
            lines.append(f"  (a sample with fields of unexpected types)  [{short_ref(ref)}]")
    return "\n".join(lines) + "\n"


def render_compare(result: dict[str, Any]) -> str:
    """A comparison as text: overall verdict, per route deltas, findings resolved/new/persisting."""
    s = result["samples"]
    lines = [
        f"Verdict: {result['verdict'].upper()}  (baseline {s['baseline']} samples, postfix {s['postfix']})"
    ]
    lines += [f"  warning: {w}" for w in result.get("warnings") or ()]
    for metric, o in result["overall"].items():
        lines.append(f"  {metric}: mean {fmt_bytes(o['baseline']['mean'])} -> {fmt_bytes(o['postfix']['mean'])} "
                     f"({_signed(o['delta_mean'])}), p95 {_signed(o['delta_p95'])}, max {_signed(o['delta_max'])}: "
                     f"{o['verdict']}{_test(o)}")  # fmt: skip
    rows = []
    for r in result["routes"]:
        b, p = r["baseline"], r["postfix"]
        rows.append([r["route"], b["count"] if b else "-", p["count"] if p else "-",
                     fmt_bytes(b["mean"]) if b else "-", fmt_bytes(p["mean"]) if p else "-",
                     _signed(r["delta_mean"]), _signed(r["delta_p95"]), r["verdict"] + _test(r)])  # fmt: skip
    if rows:
        lines += [
            "",
            "Per route (memory per request: its peak minus its start, heap where recorded; a verdict "
            "needs 10 requests on each side and p < 0.01)",
        ]
        lines += table(
            ["route", "n before", "n after", "mean before", "after", "delta", "delta p95", "verdict"], rows
        )
    f = result["findings"]
    for label in ("resolved", "new", "persisting"):
        if f[label]:
            lines += ["", f"Findings {label}:"]
            for x in f[label]:
                thin = "" if x.get("enough", True) else " (not enough data to judge)"
                lines.append(f"  [{x['severity']}] {x['kind']}: {x['title']}{thin}")
                changes = x.get("changes") or {}
                if changes:
                    lines.append(
                        "      "
                        + ", ".join(f"{k} {_num(k, v[0])} -> {_num(k, v[1])}" for k, v in changes.items())
                    )
    return "\n".join(lines) + "\n"


def _test(row: dict[str, Any]) -> str:
    if row.get("p_value") is None or row.get("verdict") not in ("better", "worse"):
        return ""
    return f" (p={row['p_value']:.3f}, effect {row['effect']:+.1f})"


def _num(key: str, v: float) -> str:
    if any(
        w in key for w in ("rss", "growth", "size", "limit", "delta", "bytes", "retained_per")
    ) and not key.endswith("share"):
        return fmt_bytes(v)
    return f"{v:g}"


def _signed(v: float | None) -> str:
    if v is None:
        return "-"
    return ("+" if v > 0 else "") + fmt_bytes(v)


def render_tail_event(kind: str, rec: dict[str, Any], *, high: bool) -> str:
    """One line of ``memprof tail``; high-memory events start with ``!!``."""
    mark = "!!" if high else "  "
    if kind == "memprof.sample":
        return f"{mark} {sample_line(rec)}"
    if kind == "memprof.dump":
        mem = rec.get("memory") or {}
        route = (rec.get("request") or {}).get("route") or "-"
        return (f"{mark} {fmt_time(rec.get('time'))} {rec.get('worker')} DUMP {rec.get('trigger')} "
                f"rss {fmt_bytes(mem.get('rss'))} ({mem.get('percent')}% of limit) route {route}")  # fmt: skip
    if kind == "memprof.crash":
        routes = ", ".join(str(r.get("route")) for r in rec.get("inflight") or ())
        return (f"{mark} {fmt_time(rec.get('last_seen'))} {rec.get('worker')} KILLED rss "
                f"{fmt_bytes(rec.get('last_rss'))}; in flight: {routes or 'nothing'}")  # fmt: skip
    return (
        f"{mark} {fmt_time(rec.get('time'))} {rec.get('worker')} state: {len(rec.get('caches') or [])} caches"
    )

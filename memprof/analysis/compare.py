"""Comparing two analyses (before and after a fix): per route and per finding, with a verdict.

A difference counts only when it is larger than the noise: twice the standard error of the difference of
the means (from each side's variance and count), 5% of the baseline, and 256 KiB, whichever is largest.
It refuses to guess: a side without samples gives no verdict (``inconclusive``), filters that cannot apply
to a saved summary are refused, and sides from another memprof version or other thresholds are named in
``warnings``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from memprof.analysis.analyze import SUMMARY_FORMAT, analyze
from memprof.analysis.filters import Filters
from memprof.analysis.sources import InputError, Progress
from memprof.analysis.thresholds import Thresholds

COMPARE_FORMAT = "memprof.compare"
COMPARE_VERSION = "1.0"
MIN_NOISE = 256 * 1024
SEVERE = ("critical", "warning")


def load_summary(
    path: str, filters: Filters | None = None, thresholds: Thresholds | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A saved ``memprof analyze --json`` file (its findings as saved), or the analysis of a data dir (or
    log file) with ``thresholds``. Filters apply to a saved summary only when it was saved with the same
    ones: anything else raises InputError (its records are not there to filter)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json" and not p.name.startswith(("dump-", "crash-")):
        try:
            data = orjson.loads(p.read_bytes())
        except orjson.JSONDecodeError:
            raise InputError(
                f"{path} is not a JSON summary (save one with `memprof analyze --json > FILE`)"
            ) from None
        if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
            raise InputError(
                f"{path} is not a memprof analysis summary (its format is not {SUMMARY_FORMAT!r})"
            )
        if str(data.get("version", "")).split(".")[0] != "1":
            raise InputError(
                f"{path} is a summary of version {data.get('version')!r}; this memprof reads 1.x"
            )
        wanted = (filters or Filters()).to_dict()
        if (filters is not None and filters.active) and data.get("filters") != wanted:
            given = " ".join(f"--{k} {v}" for k, v in wanted.items() if v is not None)
            raise InputError(
                f"{path} is a saved summary: {given} cannot be applied to it (its records are not in it); "
                f"save it with the same filters (memprof analyze DATA_DIR {given} --json) or compare data dirs"
            )
        return data
    return analyze([path], filters, thresholds=thresholds, progress=progress).summary


def noise(base: dict[str, Any], post: dict[str, Any]) -> float:
    """The smallest difference of means that is not noise, for two stat blocks."""
    se = math.sqrt(base["variance"] / max(base["count"], 1) + post["variance"] / max(post["count"], 1))
    return float(max(2 * se, 0.05 * abs(base["mean"]), MIN_NOISE))


def verdict(base: dict[str, Any], post: dict[str, Any]) -> tuple[str, float]:
    """better / worse / unchanged (lower memory is better), and the delta of the means."""
    delta = post["mean"] - base["mean"]
    if abs(delta) <= noise(base, post):
        return "unchanged", delta
    return ("better" if delta < 0 else "worse"), delta


def _side(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("count", "mean", "p50", "p95", "max")}


def _finding_key(f: dict[str, Any]) -> tuple[str, str]:
    return f["kind"], f.get("subject", "")


def warnings(base: dict[str, Any], post: dict[str, Any]) -> list[str]:
    """What makes two summaries hard to compare: other memprof versions, other thresholds, no samples."""
    out = []
    versions = (base.get("memprof_version"), post.get("memprof_version"))
    if versions[0] != versions[1]:
        out.append(f"the sides come from different memprof versions ({versions[0] or 'unrecorded'} and "
                   f"{versions[1] or 'unrecorded'}): findings may differ for that reason alone")  # fmt: skip
    bt, pt = base.get("thresholds"), post.get("thresholds")
    if bt is None or pt is None:
        if bt != pt:
            out.append(
                "one side does not record its thresholds: its findings may have been judged differently"
            )
    elif bt != pt:
        diff = ", ".join(
            f"{k} {bt.get(k)} -> {pt.get(k)}" for k in sorted(set(bt) | set(pt)) if bt.get(k) != pt.get(k)
        )
        out.append(f"the sides were judged with different thresholds ({diff})")
    for label, side in (("baseline", base), ("postfix", post)):
        if not side.get("samples"):
            out.append(
                f"the {label} has no samples (none recorded, or none matching the filters): no verdict"
            )
    return out


def compare(base: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """Side by side per route (growth and rss) and per finding, and an overall verdict (``inconclusive``
    when a side has no samples)."""
    routes = []
    base_routes = {r["route"]: r for r in base["routes"]}
    post_routes = {r["route"]: r for r in post["routes"]}
    for route in sorted(set(base_routes) | set(post_routes)):
        b, p = base_routes.get(route), post_routes.get(route)
        row: dict[str, Any] = {"route": route, "baseline": _side(b["growth"]) if b else None,
                               "postfix": _side(p["growth"]) if p else None}  # fmt: skip
        if b and p and b["growth"]["count"] and p["growth"]["count"]:
            row["verdict"], row["delta_mean"] = verdict(b["growth"], p["growth"])
            row["delta_p95"] = p["growth"]["p95"] - b["growth"]["p95"]
            row["delta_rss_p95"] = p["rss"]["p95"] - b["rss"]["p95"]
        else:
            row["verdict"], row["delta_mean"], row["delta_p95"], row["delta_rss_p95"] = (
                "new" if p else "gone", None, None, None)  # fmt: skip
        routes.append(row)
    overall: dict[str, Any] = {}
    for metric in ("growth", "rss"):
        b, p = base["memory"][metric], post["memory"][metric]
        if b["count"] and p["count"]:
            v, d = verdict(b, p)
            overall[metric] = {"baseline": _side(b), "postfix": _side(p), "delta_mean": d, "verdict": v,
                               "delta_p95": p["p95"] - b["p95"], "delta_max": p["max"] - b["max"]}  # fmt: skip
    bf = {_finding_key(f): f for f in base["findings"]}
    pf = {_finding_key(f): f for f in post["findings"]}
    findings = {
        "resolved": [_brief(bf[k]) for k in sorted(set(bf) - set(pf))],
        "new": [_brief(pf[k]) for k in sorted(set(pf) - set(bf))],
        "persisting": [
            {**_brief(pf[k]), "changes": _changes(bf[k], pf[k])} for k in sorted(set(pf) & set(bf))
        ],
    }
    worse = any(r["verdict"] == "worse" for r in routes) or any(
        f["severity"] in SEVERE for f in findings["new"]
    )
    worse = worse or overall.get("growth", {}).get("verdict") == "worse"
    better = any(r["verdict"] == "better" for r in routes) or any(
        f["severity"] in SEVERE for f in findings["resolved"]
    )
    better = better or overall.get("growth", {}).get("verdict") == "better"
    empty = not base.get("samples") or not post.get("samples")
    return {
        "format": COMPARE_FORMAT,
        "version": COMPARE_VERSION,
        "verdict": "inconclusive" if empty else "worse" if worse else "better" if better else "unchanged",
        "warnings": warnings(base, post),
        "overall": overall,
        "routes": routes,
        "findings": findings,
        "samples": {"baseline": base["samples"], "postfix": post["samples"]},
    }


def _brief(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": f["kind"],
        "severity": f["severity"],
        "subject": f.get("subject", ""),
        "title": f["title"],
    }


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[float]]:
    """The numbers of a persisting finding's evidence that changed: ``{key: [before, after]}``."""
    b, a = before.get("evidence", {}), after.get("evidence", {})
    return {
        k: [b[k], a[k]]
        for k in sorted(set(b) & set(a))
        if isinstance(b[k], int | float) and isinstance(a[k], int | float) and not isinstance(b[k], bool)
        and b[k] != a[k]
    }  # fmt: skip

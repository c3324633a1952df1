"""Comparing two analyses (before and after a fix): per route and per finding, with a verdict.

A difference counts only when it is larger than the noise: twice the standard error of the difference of
the means (from each side's variance and count), 5% of the baseline, and 256 KiB, whichever is largest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from memprof.analysis.analyze import SUMMARY_FORMAT, analyze
from memprof.analysis.filters import Filters
from memprof.analysis.sources import InputError
from memprof.analysis.thresholds import Thresholds

COMPARE_FORMAT = "memprof.compare"
COMPARE_VERSION = "1.0"
MIN_NOISE = 256 * 1024
SEVERE = ("critical", "warning")


def load_summary(
    path: str, filters: Filters | None = None, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """A saved ``memprof analyze --json`` file (its findings as saved), or the analysis of a data dir (or
    log file) with ``thresholds``."""
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
        return data
    return analyze([path], filters, thresholds=thresholds).summary


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


def compare(base: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """Side by side per route (growth and rss) and per finding, and an overall verdict."""
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
    return {
        "format": COMPARE_FORMAT,
        "version": COMPARE_VERSION,
        "verdict": "worse" if worse else "better" if better else "unchanged",
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

"""Comparing two analyses (before and after a fix): per route and per finding, with a verdict.

A route gets a verdict only with ``MIN_SAMPLES`` requests or more on both sides (else ``not enough data``);
a difference counts when a rank test on the per-request memory (Mann-Whitney U on each side's kept values;
Welch's test on the stat blocks where a summary has none) gives p < ``ALPHA`` and the means differ by more
than 5% of the baseline and 256 KiB; the effect size is shown. Findings are matched by a stable identity
(kind and subject: route, statement or code site, never a PID); a new or resolved finding moves the verdict
only with enough evidence on its side. It refuses to guess: a side without samples gives no verdict
(``inconclusive``), filters that cannot apply to a saved summary are refused, and sides from another
memprof version or other thresholds are named in ``warnings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from memprof.analysis.analyze import SUMMARY_FORMAT, analyze
from memprof.analysis.filters import Filters
from memprof.analysis.sources import InputError, Progress
from memprof.analysis.spread import mann_whitney, welch_p
from memprof.analysis.thresholds import Thresholds

COMPARE_FORMAT = "memprof.compare"
COMPARE_VERSION = "1.0"
MIN_NOISE = 256 * 1024
MIN_SAMPLES = 10
"""Requests a route needs on each side for a verdict."""
MIN_EVIDENCE = 3
"""Requests (or samples) a new or resolved finding needs to move the verdict."""
ALPHA = 0.01
SEVERE = ("critical", "warning")
NOT_ENOUGH = "not enough data"


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


def noise(base: dict[str, Any]) -> float:
    """The smallest difference of means that matters: 5% of the baseline mean, and 256 KiB."""
    return float(max(0.05 * abs(base["mean"]), MIN_NOISE))


def verdict(
    base: dict[str, Any], post: dict[str, Any], values: tuple[list[int], list[int]] | None = None
) -> tuple[str, float, float, float]:
    """better / worse / unchanged / not enough data (lower memory is better), the delta of the means, the
    p-value and the effect size (Cliff's delta from the values, else the standardized difference)."""
    delta = post["mean"] - base["mean"]
    if base["count"] < MIN_SAMPLES or post["count"] < MIN_SAMPLES:
        return NOT_ENOUGH, delta, 1.0, 0.0
    if values and len(values[0]) >= MIN_SAMPLES and len(values[1]) >= MIN_SAMPLES:
        p, effect = mann_whitney(values[0], values[1])
    else:
        p, effect = welch_p(base, post)
    if p >= ALPHA or abs(delta) <= noise(base):
        return "unchanged", delta, p, effect
    return ("better" if delta < 0 else "worse"), delta, p, effect


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
            vals = (b.get("growth_sample") or [], p.get("growth_sample") or [])
            row["verdict"], row["delta_mean"], row["p_value"], row["effect"] = verdict(
                b["growth"], p["growth"], vals
            )
            row["p_value"], row["effect"] = round(row["p_value"], 4), round(row["effect"], 3)
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
            v, d, pv, eff = verdict(b, p)
            overall[metric] = {"baseline": _side(b), "postfix": _side(p), "delta_mean": d, "verdict": v,
                               "p_value": round(pv, 4), "effect": round(eff, 3),
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
        f["severity"] in SEVERE and f["enough"] for f in findings["new"]
    )
    worse = worse or overall.get("growth", {}).get("verdict") == "worse"
    better = any(r["verdict"] == "better" for r in routes) or any(
        f["severity"] in SEVERE and f["enough"] for f in findings["resolved"]
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
        "enough": _evidence(f) >= MIN_EVIDENCE,
    }


def _evidence(f: dict[str, Any]) -> int:
    """How many requests (or samples, observations) a finding stands on; 'many' for a crash or a leak."""
    if f["kind"] in ("worker_killed", "leak", "unbounded_cache"):
        return MIN_EVIDENCE
    ev = f.get("evidence") or {}
    for key in ("requests", "samples", "count", "observations"):
        if isinstance(ev.get(key), int):
            return int(ev[key])
    size = ev.get("size")
    return int(size.get("count", 0)) if isinstance(size, dict) else MIN_EVIDENCE


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[float]]:
    """The numbers of a persisting finding's evidence that changed: ``{key: [before, after]}``."""
    b, a = before.get("evidence", {}), after.get("evidence", {})
    return {
        k: [b[k], a[k]]
        for k in sorted(set(b) & set(a))
        if isinstance(b[k], int | float) and isinstance(a[k], int | float) and not isinstance(b[k], bool)
        and b[k] != a[k]
    }  # fmt: skip

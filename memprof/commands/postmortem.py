"""``memprof postmortem [DATA_DIR]``: what happened to workers that died without a clean shutdown.

Turns the flight-recorder files of dead workers on this host into crash records (as the next memprof
start would), then prints every crash record of the data dir, newest first: pid, how long it ran, its
last RSS against the limit, and the requests in flight when it died.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

_MB = 1024 * 1024


def postmortem(data_dir: Path) -> dict[str, Any]:
    """Collect crashes in ``data_dir`` and return ``{"crashes": [...], "running": [...], "invalid": [...]}``
    (pure data). A worker file with fields of the wrong type is listed in ``invalid`` and left in place."""
    from memprof.analysis.flight_files import check_worker
    from memprof.commands._errors import CliError
    from memprof.records.versions import WORKER_SCHEMA
    from memprof.watchdog.flight import WORKERS_DIR, collect_crashes, live_workers, read_crashes
    from memprof.workers import worker_alive

    if not data_dir.is_dir():
        raise CliError(f"data dir {str(data_dir)!r} does not exist; pass the MEMPROF_DATA_DIR of the service")
    collect_crashes(data_dir, "postmortem")
    invalid = []
    for path in sorted((data_dir / WORKERS_DIR).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            invalid.append({"file": str(path), "reason": f"unreadable: {str(exc)[:200]}"})
            continue
        problem = check_worker(doc)
        if problem is not None and isinstance(doc, dict) and doc.get("schema") == WORKER_SCHEMA:
            invalid.append({"file": str(path), "reason": problem})
    bad = {i["file"] for i in invalid}
    running = [w for w in live_workers(data_dir) if str(data_dir / WORKERS_DIR / f"{w.get('host')}-{w.get('pid')}.json") not in bad
               and check_worker(w) is None and worker_alive(int(w["pid"]), float(w.get("started") or 0))]  # fmt: skip
    return {"crashes": read_crashes(data_dir), "running": running, "invalid": invalid}


def _when(ts: float | None) -> str:
    if not ts:
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mb(n: int | None) -> str:
    return "?" if not n else f"{n / _MB:.0f} MiB"


def render(result: dict[str, Any]) -> str:
    """The text report of :func:`postmortem`."""
    lines = []
    crashes = result["crashes"]
    if not crashes:
        lines.append("No crashed workers found.")
    for crash in crashes:
        pct = f" ({crash['percent']:.0f}% of {_mb(crash.get('limit'))})" if crash.get("percent") else ""
        lines.append(
            f"worker {crash['worker']} (pid {crash['pid']}) died without a clean shutdown; "
            f"last seen {_when(crash.get('last_seen'))} after {crash.get('uptime_s', 0):.0f} s"
        )
        lines.append(f"  last RSS {_mb(crash.get('last_rss'))}{pct}")
        inflight = crash.get("inflight") or []
        total = crash.get("inflight_total", len(inflight))
        lines.append(f"  in flight: {total} request(s), {len(inflight)} profiled")
        for req in inflight:
            started = req.get("started")
            age = f", running {crash['last_seen'] - started:.1f} s" if started else ""
            route = req.get("route") or req.get("path") or "?"
            lines.append(
                f"    {req.get('method', '?')} {route}{age}, RSS at start {_mb(req.get('rss_start'))}"
            )
        lines.append(f"  record: {crash.get('file', '?')}")
    for bad in result.get("invalid") or ():
        lines.append(f"invalid worker file {bad['file']}: {bad['reason']} (left in place)")
    for worker in result["running"]:
        lines.append(
            f"running: {worker.get('worker')} (pid {worker.get('pid')}), RSS {_mb(worker.get('rss'))}"
        )
    return "\n".join(lines)


def postmortem_command(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR", help="The service's data dir (default: MEMPROF_DATA_DIR or ./memprof-data)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the crash records as JSON.")] = False,
) -> None:
    """Report workers that died without a clean shutdown (SIGKILL, OOM killer) and their last requests."""
    if data_dir is None:
        from memprof.settings import load_settings

        data_dir = load_settings().data_dir
    result = postmortem(data_dir)
    typer.echo(json.dumps(result, indent=1) if as_json else render(result))

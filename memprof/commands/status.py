"""``memprof status``: what every worker is doing now (mode, breaker, guard, last dump, errors).

Workers publish their status about every five seconds to ``DATA_DIR/status/<host>-<pid>.json``
and, with Redis, to ``memprof:worker:<host>-<pid>`` (expiring). A status older than
:data:`STALE_AFTER_S` belongs to a worker that stopped or hangs.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memprof.commands.control import DataDir, cli_settings

if TYPE_CHECKING:
    from memprof.settings import MemprofSettings

STALE_AFTER_S = 20.0


def _last_dump(data_dir: Path, pid: int | None = None) -> dict[str, Any] | None:
    dumps = []
    for path in (data_dir / "dumps").glob("dump-*.json"):
        if pid is not None and f"-{pid}-" not in path.name:  # dump-<time>-<pid>-<trigger>...json
            continue
        try:
            dumps.append((path.stat().st_mtime, path))
        except OSError:
            continue
    if not dumps:
        return None
    mtime, path = max(dumps)
    return {"file": str(path), "time": mtime}


def collect(settings: MemprofSettings) -> dict[str, Any]:
    """Every worker's published status, with ``age_s``, ``stale`` and its last dump; pure data."""
    from memprof.safety.control_plane import STATUS_DIR, STATUS_SUFFIX, redis_client, worker_key
    from memprof.workers import worker_alive

    found: dict[str, dict[str, Any]] = {}
    for path in sorted((settings.data_dir / STATUS_DIR).glob(f"*{STATUS_SUFFIX}")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(status, dict) and "worker" in status:
            found[status["worker"]] = status
    redis_error = None
    if settings.redis_url:
        try:
            client = redis_client(str(settings.redis_url))
            keys = sorted(client.scan_iter(worker_key(settings.redis_prefix, "*"), count=500))
            for text in client.mget(keys) if keys else []:
                if text:
                    status = json.loads(text)
                    found.setdefault(status["worker"], status)
        except Exception as exc:
            redis_error = type(exc).__name__
    now = time.time()
    host = socket.gethostname()
    workers = []
    for status in sorted(found.values(), key=lambda s: s["worker"]):
        status["age_s"] = round(now - float(status.get("time", 0)), 1)
        started = status.get("started")
        pid = int(status.get("pid", 0))
        gone = status.get("host") == host and not worker_alive(pid, float(started) if started else None)
        status["stale"] = gone or status["age_s"] > STALE_AFTER_S
        status["last_dump"] = _last_dump(settings.data_dir, status.get("pid"))
        workers.append(status)
    return {
        "data_dir": str(settings.data_dir),
        "redis_error": redis_error,
        "last_dump": _last_dump(settings.data_dir),
        "workers": workers,
    }


def render(data: dict[str, Any]) -> str:
    """The text report of :func:`collect`."""
    from memprof.safety.control_plane import STATUS_DIR

    lines = []
    if data["redis_error"]:
        lines.append(f"Redis did not answer ({data['redis_error']}); showing status files only")
    if not data["workers"]:
        lines.append(f"no worker has published a status in {data['data_dir']}/{STATUS_DIR}")
    for w in data["workers"]:
        brk, guard, errs = w["breaker"], w["overhead_guard"], w["internal_errors"]
        state = "STALE " if w["stale"] else ""
        mode = w["mode"] + (f" (paused: {w['paused']})" if w["paused"] else "")
        lines.append(f"{state}{w['worker']}  mode {mode}, configured {w['configured_mode']}")
        lines.append(f"  profiled {w['profiled']}, status {w['age_s']}s old")
        lines.append(
            f"  breaker {brk['state']} ({brk['consecutive_failures']}/{brk['threshold']} failures, "
            f"{brk['trips']} trips)"
        )
        lines.append(
            f"  overhead guard {guard['state']} (limit {guard['limit_ms']} ms, steps {guard['steps']})"
        )
        lines.append(f"  internal errors {errs['total']}" + (f" {errs['by_place']}" if errs["total"] else ""))
        control = w.get("control") or {}
        if control.get("override"):
            lines.append(f"  override {control['override']}")
        if control.get("override_refused"):
            lines.append(f"  override refused: {control['override_refused']}")
        if w.get("targeted"):
            lines.append(f"  targeted tokens {w['targeted']}")
        dump = w.get("last_dump")
        lines.append(f"  last dump {dump['file'] if dump else 'none'}")
    if data["last_dump"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data["last_dump"]["time"]))
        lines.append(f"last dump in the data dir: {data['last_dump']['file']} ({when})")
    return "\n".join(lines)


def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show each worker's mode, circuit breaker, overhead guard, last dump and error counts."""
    data = collect(cli_settings(data_dir))
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))

"""``memprof status [DATA_DIR]``: what every worker is doing now (mode, breaker, records, errors).

Workers publish their status about every five seconds, at once when their mode, breaker or overhead
guard changes, and a last time at a clean shutdown, to ``DATA_DIR/status/<host>-<pid>.json`` and, with
Redis, to ``memprof:worker:<host>-<pid>`` (expiring). Each worker is shown as ``running``, ``stopped``
(a clean shutdown: its counts are final), ``gone`` (its process ended without one: see
``memprof postmortem``) or ``stale`` (running, but its status is older than :data:`STALE_AFTER_S`: hung).
A data dir that cannot be read is an error; one the workers cannot write to (read-only, full, not
writable) is said in one sentence after the report, with exit code 1.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memprof.commands.control import DataDir, cli_settings

if TYPE_CHECKING:
    from memprof.settings import MemprofSettings

STALE_AFTER_S = 20.0
FULL_BELOW_BYTES = 64 * 1024  # free space under which the data dir counts as full
_MB = 1024 * 1024


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


def _read_status(path: Path) -> dict[str, Any] | None:
    for _attempt in range(2):  # a worker on a full disk rewrites its file in place: read again once
        try:
            status = json.loads(path.read_text())
        except ValueError:
            time.sleep(0.01)
            continue
        except OSError:
            return None
        return status if isinstance(status, dict) and "worker" in status else None
    return None


def _status_files(data_dir: Path, *, redis: bool) -> list[Path]:
    """The status files, or a CliError when the data dir cannot be read (with Redis, a data dir that is
    not on this machine is fine: the statuses come from Redis)."""
    from memprof.commands._errors import CliError
    from memprof.safety.control_plane import STATUS_SUFFIX, status_dir

    try:
        if not stat.S_ISDIR(os.stat(data_dir).st_mode):
            raise CliError(
                f"data dir {str(data_dir)!r} is not a directory; pass the MEMPROF_DATA_DIR of the service"
            )
        os.listdir(data_dir)
        directory = status_dir(data_dir)
        return sorted(directory.glob(f"*{STATUS_SUFFIX}")) if directory.is_dir() else []
    except FileNotFoundError:
        if redis:
            return []
        raise CliError(
            f"data dir {str(data_dir)!r} does not exist; pass the MEMPROF_DATA_DIR of the service"
        ) from None
    except OSError as exc:
        raise CliError(
            f"cannot read data dir {str(data_dir)!r} ({exc.strerror or exc}): run memprof status as the "
            "service's user"
        ) from None


def write_problem(data_dir: Path) -> str | None:
    """Why workers cannot write to ``data_dir`` (read-only, full, no permission), or None."""
    try:
        vfs = os.statvfs(data_dir)
    except OSError as exc:
        return f"cannot check data dir {str(data_dir)!r} ({exc.strerror or exc})"
    if vfs.f_flag & os.ST_RDONLY:
        return f"data dir {str(data_dir)!r} is on a read-only file system: workers write no samples, dumps or status"
    if vfs.f_bavail * vfs.f_frsize < FULL_BELOW_BYTES:
        return (
            f"data dir {str(data_dir)!r} is full ({vfs.f_bavail * vfs.f_frsize // 1024} KiB free): workers drop "
            "their records (see 'write failed'); free space or lower MEMPROF_MAX_TOTAL_MB"
        )
    if not os.access(data_dir, os.W_OK | os.X_OK):
        return f"data dir {str(data_dir)!r} is not writable ({os.strerror(errno.EACCES)}) by this user"
    return None


def _state(status: dict[str, Any], host: str) -> str:
    from memprof.workers import worker_alive

    if status.get("stopped"):
        return "stopped"
    started = status.get("started")
    pid = int(status.get("pid", 0))
    if status.get("host") == host and not worker_alive(pid, float(started) if started else None):
        return "gone"
    return "stale" if status["age_s"] > STALE_AFTER_S else "running"


def collect(settings: MemprofSettings) -> dict[str, Any]:
    """Every worker's published status, with ``age_s``, ``state`` and its last dump, and whether the
    workers can write to the data dir; pure data (a :class:`CliError` when the data dir cannot be read)."""
    from memprof.safety.control_plane import redis_client, worker_key

    data_dir = settings.data_dir
    found: dict[str, dict[str, Any]] = {}
    for path in _status_files(data_dir, redis=bool(settings.redis_url)):
        status = _read_status(path)
        if status is not None:
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
        status["state"] = _state(status, host)
        status["stale"] = status["state"] in ("gone", "stale")
        status["records"] = records(status)
        status["last_dump"] = _last_dump(data_dir, status.get("pid"))
        workers.append(status)
    return {
        "data_dir": str(data_dir),
        "problem": write_problem(data_dir) if os.path.lexists(data_dir) else None,
        "redis_error": redis_error,
        "last_dump": _last_dump(data_dir),
        "workers": workers,
    }


def records(status: dict[str, Any]) -> dict[str, Any]:
    """A worker's record counts: written, dropped by reason (and in all), removed by the size cap."""
    writer = status.get("writer") or {}
    dropped = writer.get("dropped", 0)
    if not isinstance(dropped, dict):  # a status from before memprof counted drops by reason
        dropped = {"queue_full": int(dropped or 0)}
    removed = writer.get("removed") or {"files": 0, "records": 0, "bytes": 0}
    return {
        "written": int(writer.get("written", 0)),
        "pending": int(writer.get("pending", 0)),
        "dropped": sum(int(n) for n in dropped.values()),
        "dropped_by_reason": dropped,
        "removed": removed,
        "last_error": writer.get("last_error"),
    }


def _worker_lines(w: dict[str, Any]) -> list[str]:
    brk, guard, errs, rec = w["breaker"], w["overhead_guard"], w["internal_errors"], w["records"]
    state = w["state"]
    if state == "stopped":
        when = time.strftime("%H:%M:%S UTC", time.gmtime(float(w["stopped"])))
        label = f"stopped cleanly at {when} (final counts)"
    elif state == "gone":
        label = "GONE: its process ended without a clean shutdown (see memprof postmortem)"
    elif state == "stale":
        label = f"STALE: running, but its status is {w['age_s']}s old (hung?)"
    else:
        label = "running"
    mode = w["mode"] + (f" (paused: {w['paused']})" if w["paused"] else "")
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rec["dropped_by_reason"].items())
    removed = rec["removed"]
    lines = [
        f"{w['worker']}  {label}",
        f"  mode {mode}, configured {w['configured_mode']}; status {w['age_s']}s old",
        f"  profiled {w['profiled']}: written {rec['written']}, dropped {rec['dropped']} ({reasons})"
        + (f", pending {rec['pending']}" if rec["pending"] else ""),
        f"  removed by the size cap: {removed['files']} files, {removed['records']} records, "
        f"{removed['bytes'] / _MB:.1f} MiB",
    ]
    if rec["last_error"]:
        lines.append(f"  last write error: {rec['last_error']}")
    lines.append(
        f"  breaker {brk['state']} ({brk['consecutive_failures']}/{brk['threshold']} failures, "
        f"{brk['trips']} trips) as of {w['age_s']}s ago"
    )
    lines.append(f"  overhead guard {guard['state']} (limit {guard['limit_ms']} ms, steps {guard['steps']})")
    detail = f" {errs['by_place']}" if errs["total"] else ""
    lines.append(f"  internal errors {errs['total']} (request path {errs.get('request_path', '?')}){detail}")
    for place, step in (errs.get("background") or {}).items():
        if step.get("failing"):
            lines.append(
                f"  background {place} failing ({step['failures']} failures, retry in {step['retry_in_s']}s): "
                f"{step['last']}"
            )
    control = w.get("control") or {}
    if control.get("override"):
        lines.append(f"  override {control['override']}")
    if control.get("override_refused"):
        lines.append(f"  override refused: {control['override_refused']}")
    if w.get("targeted"):
        lines.append(f"  targeted tokens {w['targeted']}")
    dump = w.get("last_dump")
    lines.append(f"  last dump {dump['file'] if dump else 'none'}")
    return lines


def render(data: dict[str, Any]) -> str:
    """The text report of :func:`collect` (the data dir problem, if any, is told apart)."""
    from memprof.safety.control_plane import STATUS_DIR

    lines = []
    if data["redis_error"]:
        lines.append(f"Redis did not answer ({data['redis_error']}); showing status files only")
    if not data["workers"]:
        lines.append(f"no worker has published a status in {data['data_dir']}/{STATUS_DIR}")
    for w in data["workers"]:
        lines.extend(_worker_lines(w))
    if data["last_dump"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data["last_dump"]["time"]))
        lines.append(f"last dump in the data dir: {data['last_dump']['file']} ({when})")
    return "\n".join(lines)


def status(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            # readable=False: an unreadable data dir gets memprof's own one-sentence error, not click's
            metavar="DIR",
            help="The service's data dir (default: --data-dir, MEMPROF_DATA_DIR or ./memprof-data).",
            readable=False,
        ),
    ] = None,
    data_dir_option: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show each worker's state, mode, records written, dropped and removed, breaker and errors."""
    from memprof.commands._errors import CliError

    data = collect(cli_settings(data_dir or data_dir_option))
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))
    if data["problem"]:
        raise CliError(data["problem"], 1)

"""``memprof dump [DATA_DIR]``: ask the running workers of a data dir for a dump now (trigger ``manual``).

Writes ``DATA_DIR/dump-request.json``; each worker's watchdog sees it within one tick and writes a
dump, whose paths are printed as they appear.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated

import typer


def request_dumps(data_dir: Path, name: str | None, pids: list[int] | None, wait: float) -> list[Path]:
    """Ask for dumps and wait up to ``wait`` seconds for one from each expected worker; return the paths."""
    from memprof.commands._errors import CliError
    from memprof.watchdog.flight import live_workers
    from memprof.watchdog.requests import ask_for_dump
    from memprof.workers import worker_alive

    if not data_dir.is_dir():
        raise CliError(f"data dir {str(data_dir)!r} does not exist; pass the MEMPROF_DATA_DIR of the service")
    host = socket.gethostname()
    workers = {
        int(w["pid"])
        for w in live_workers(data_dir)
        if w.get("host") != host or worker_alive(int(w["pid"]), float(w.get("started") or 0))
    }
    expected = set(pids) if pids else workers
    if not expected:
        raise CliError(
            f"no worker is running with data dir {str(data_dir)!r} (no DATA_DIR/workers/ files); "
            "is memprof enabled there with MEMPROF_WATCHDOG_INTERVAL_MS > 0?"
        )
    since = ask_for_dump(data_dir, name, sorted(pids) if pids else None)
    deadline = time.monotonic() + wait
    found: dict[int, Path] = {}
    while time.monotonic() < deadline and set(found) != expected:
        for path in sorted((data_dir / "dumps").glob("dump-*-manual*.json")):
            pid = int(path.name.split("-")[2])
            if pid in expected and pid not in found and path.stat().st_mtime >= since - 1.0:
                found[pid] = path
        time.sleep(0.05)
    if not found:
        raise CliError(f"no worker wrote a dump within {wait:g} s (workers: {sorted(expected)})", code=1)
    return [found[pid] for pid in sorted(found)]


def dump_command(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR", help="The service's data dir (default: MEMPROF_DATA_DIR or ./memprof-data)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="A name for the dumps (part of their file names).")
    ] = None,
    pid: Annotated[
        list[int] | None, typer.Option(metavar="PID", help="Only this worker (repeat for several).")
    ] = None,
    wait: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds to wait for the dumps.")] = 10.0,
) -> None:
    """Ask the running workers of a data dir for a dump now; print the dump files."""
    if data_dir is None:
        from memprof.settings import load_settings

        data_dir = load_settings().data_dir
    for path in request_dumps(data_dir, name, pid or None, wait):
        typer.echo(str(path))

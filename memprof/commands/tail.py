"""``memprof tail``: a live view of samples, dumps and crash records as they are written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from memprof.commands._analysis_options import Json, Paths, default_paths, emit
from memprof.commands._errors import CliError

MIB = 1024 * 1024


def run(
    paths: Paths = None,
    once: Annotated[
        bool, typer.Option(help="Print what is new once and exit (with --from-start: everything).")
    ] = False,
    duration: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Stop after this many seconds (default: until Ctrl-C).", min=0),
    ] = None,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds between polls.", min=0.05)
    ] = 0.5,
    from_start: Annotated[bool, typer.Option(help="Also show the records already written.")] = False,
    high_mib: Annotated[
        float, typer.Option(metavar="MIB", help="Highlight requests whose memory grew by this many MiB.")
    ] = 32.0,
    json: Json = False,
) -> None:
    """Follow data dirs live; high-memory requests, dumps and killed workers are marked with !!."""
    from memprof.analysis.render_json import render_line
    from memprof.analysis.render_views import render_tail_event
    from memprof.analysis.tail import Follower, is_high

    inputs = default_paths(paths)
    for p in inputs:
        if not Path(p).is_dir():
            raise CliError(f"{p} is not a directory: pass the MEMPROF_DATA_DIR of a profiled app")
    follower = Follower(inputs, from_start=from_start)
    threshold = int(high_mib * MIB)
    deadline = None if duration is None else time.monotonic() + duration
    if not json:
        typer.echo(f"following {', '.join(inputs)} (Ctrl-C to stop)", err=True)
    try:
        while True:
            for tag, rec, ref in follower.poll():
                try:
                    high = is_high(tag, rec, threshold)
                    line = "" if json else render_tail_event(tag, rec, high=high) + "\n"
                except (TypeError, ValueError, KeyError, AttributeError):  # fields of unexpected types
                    high, line = False, f"   {ref}: a record with fields of unexpected types\n"
                if json:
                    typer.echo(
                        render_line({"kind": tag.split(".", 1)[1], "high": high, "ref": ref, "record": rec}),
                        nl=False,
                    )
                else:
                    emit(line)
            if once or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    if follower.report.skipped and not json:
        typer.echo(f"skipped {follower.report.skipped} unreadable lines or files", err=True)

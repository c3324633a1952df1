"""``memprof report --html FILE``: one self-contained HTML page with charts and findings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.commands._analysis_options import (
    Jobs,
    Paths,
    Route,
    ShowProgress,
    Since,
    Threshold,
    Until,
    Worker,
    default_paths,
    input_errors,
    make_filters,
    make_thresholds,
    progress_line,
)  # fmt: skip
from memprof.commands._errors import CliError


def run(
    paths: Paths = None,
    html: Annotated[
        Path,
        typer.Option("--html", metavar="FILE", help="Where to write the report (one self-contained file)."),
    ] = Path("memprof-report.html"),
    title: Annotated[str, typer.Option(metavar="TEXT", help="Title of the page.")] = "memprof report",
    since: Since = None,
    until: Until = None,
    route: Route = None,
    worker: Worker = None,
    points: Annotated[
        int, typer.Option(metavar="N", help="Most points per worker in the memory chart.", min=10)
    ] = 800,
    jobs: Jobs = None,
    threshold: Threshold = None,
    progress: ShowProgress = None,
) -> None:
    """Write an HTML report: memory over time per worker with dumps marked, per-route distributions, phases, findings."""
    from memprof.analysis.report_html import render, report_data

    inputs = default_paths(paths)
    limits = make_thresholds(threshold)
    filters = make_filters(since, until, route, worker)
    with input_errors(), progress_line(progress) as advance:
        summary, charts = report_data(
            inputs, filters, thresholds=limits, points=points, progress=advance, threads=jobs
        )
    page = render(summary, charts, title=title)
    try:
        html.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write the report to {html}: {exc.strerror or exc}") from None
    s = summary
    typer.echo(
        f"wrote {html} ({s['samples']} samples, {s['dumps']['count']} dumps, {len(s['findings'])} findings)"
    )

"""``memprof analyze``: statistics, breakdowns and root-cause findings from memprof records."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from memprof.commands._analysis_options import (
    Jobs,
    Json,
    Paths,
    Route,
    ShowProgress,
    Since,
    Threshold,
    Until,
    Worker,
    default_paths,
    emit,
    input_errors,
    make_filters,
    make_thresholds,
    progress_line,
)  # fmt: skip
from memprof.commands._errors import CliError

SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}


class FailOn(StrEnum):
    never = "never"
    warning = "warning"
    critical = "critical"


def run(
    paths: Paths = None,
    summary: Annotated[
        bool | None, typer.Option("--summary/--no-summary", help="Show the summary (the default view).")
    ] = None,
    recent: Annotated[int, typer.Option(metavar="N", help="Show the N most recent samples.", min=0)] = 0,
    details: Annotated[
        bool,
        typer.Option(
            help="With --recent: checkpoints, SQL, models, session of each; in the summary: whole "
            "statements and every route of a finding."
        ),
    ] = False,
    pattern: Annotated[
        str | None,
        typer.Option(
            metavar="TEXT",
            help="Only records mentioning TEXT in a route, SQL, model, session key or stack frame.",
        ),
    ] = None,
    since: Since = None,
    until: Until = None,
    route: Route = None,
    worker: Worker = None,
    json: Json = False,
    fail_on: Annotated[
        FailOn,
        typer.Option(
            metavar="never|warning|critical",
            help="Exit with code 3 when a finding of this severity or worse is found.",
        ),
    ] = FailOn.never,
    progress: ShowProgress = None,
    jobs: Jobs = None,
    threshold: Threshold = None,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Also caches and frames of installed libraries, the stdlib and memprof."),
    ] = False,
) -> None:
    """Diagnose memory: statistics per route and phase, SQL/model/session hot spots, dumps, crashes, findings."""
    from memprof.analysis.analyze import analyze_sources
    from memprof.analysis.render_json import render as render_json
    from memprof.analysis.render_text import render_summary
    from memprof.analysis.render_views import render_recent
    from memprof.analysis.sources import discover

    inputs = default_paths(paths)
    limits = make_thresholds(threshold)
    filters = make_filters(since, until, route, worker, pattern)
    with input_errors():
        sources = discover(inputs)
        with progress_line(progress) as advance:
            result = analyze_sources(
                sources,
                inputs,
                filters,
                recent=recent,
                progress=advance,
                thresholds=limits,
                threads=jobs,
                show_all=show_all,
            )
    if result.memory_raised_to:
        typer.echo(
            f"memprof: note: the analysis needed more memory than usual: its limit was raised to "
            f"{result.memory_raised_to // 10**6} MB",
            err=True,
        )
    show_summary = summary if summary is not None else not recent
    recent_records = result.recent_records()
    if json:
        data: dict[str, Any] = (
            dict(result.summary) if show_summary else {"format": "memprof.recent", "version": "1.0"}
        )
        if recent:
            data["recent"] = [{"ref": ref, "record": rec} for rec, ref in recent_records]
        emit(render_json(data))
    else:
        if show_summary:
            emit(render_summary(result.summary, details=details))
        if recent:
            if show_summary:
                emit("\n")
            emit(render_recent(recent_records, details=details))
    if fail_on is not FailOn.never:
        worst = max((SEVERITY_RANK[f["severity"]] for f in result.summary["findings"]), default=0)
        if worst >= SEVERITY_RANK[fail_on.value]:
            raise CliError(f"findings of severity {fail_on.value} or worse were found (--fail-on)", 3)

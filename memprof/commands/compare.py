"""``memprof compare BASELINE POSTFIX``: did a fix help? Per route and per finding, with a verdict."""

from __future__ import annotations

from typing import Annotated

import typer

from memprof.commands._analysis_options import (
    Json,
    Route,
    ShowProgress,
    Since,
    Threshold,
    Until,
    Worker,
    emit,
    input_errors,
    make_filters,
    make_thresholds,
    progress_line,
)
from memprof.commands._errors import CliError


def run(
    baseline: Annotated[
        str,
        typer.Argument(
            metavar="BASELINE",
            help="Data dir (or log file, or saved `analyze --json` summary) before the change.",
        ),
    ],
    postfix: Annotated[str, typer.Argument(metavar="POSTFIX", help="The same after the change.")],
    since: Since = None,
    until: Until = None,
    route: Route = None,
    worker: Worker = None,
    json: Json = False,
    fail_if_worse: Annotated[
        bool, typer.Option(help="Exit with code 3 when the verdict is worse (for CI).")
    ] = False,
    threshold: Threshold = None,
    progress: ShowProgress = None,
) -> None:
    """Compare two runs side by side: per-route memory deltas, findings resolved/new, and a verdict."""
    from memprof.analysis.compare import compare, load_summary
    from memprof.analysis.render_json import render as render_json
    from memprof.analysis.render_views import render_compare

    filters = make_filters(since, until, route, worker)
    limits = make_thresholds(threshold)
    with input_errors():
        with progress_line(progress, "baseline: ") as advance:
            base = load_summary(baseline, filters, limits, advance)
        with progress_line(progress, "postfix: ") as advance:
            post = load_summary(postfix, filters, limits, advance)
        result = compare(base, post)
    for warning in result["warnings"]:
        typer.echo(f"memprof: warning: {warning}", err=True)
    emit(render_json(result) if json else render_compare(result))
    if fail_if_worse and result["verdict"] == "worse":
        raise CliError("the postfix run is worse than the baseline (--fail-if-worse)", 3)
    if fail_if_worse and result["verdict"] == "inconclusive":
        raise CliError("no verdict: a side has no samples (--fail-if-worse)", 3)

"""``memprof export DIR --parquet OUT``: the records of data dirs (or logs) as Parquet files, for a fleet's
object storage or a warehouse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.commands._analysis_options import (
    Jobs,
    Paths,
    ShowProgress,
    default_paths,
    input_errors,
    progress_line,
)
from memprof.commands._errors import CliError


def run(
    paths: Paths = None,
    parquet: Annotated[
        Path,
        typer.Option(
            "--parquet", metavar="DIR", help="Directory to write samples.parquet, dumps.parquet, ... into."
        ),
    ] = Path("memprof-parquet"),
    progress: ShowProgress = None,
    jobs: Jobs = None,
) -> None:
    """Write the records as Parquet files with the analyzer's schema (docs/analyzer.md); `memprof analyze OUT` reads them."""
    from memprof.analysis.export import export_parquet

    inputs = default_paths(paths)
    try:
        with input_errors(), progress_line(progress) as advance:
            report, written = export_parquet(inputs, parquet, progress=advance, threads=jobs)
    except OSError as exc:
        raise CliError(f"cannot write to {parquet}: {exc.strerror or exc}") from None
    rows = ", ".join(f"{n} {table}" for table, n in written.items() if n)
    skipped = f"; {report.skipped} bad lines or files skipped" if report.skipped else ""
    typer.echo(f"wrote {parquet} ({rows}{skipped})")

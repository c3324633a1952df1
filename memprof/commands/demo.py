"""``memprof demo``: profile the bundled example app under bounded load, then diagnose it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    directory: Annotated[
        Path,
        typer.Option("--dir", metavar="DIR", help="Where the demo writes its database, records and report."),
    ] = Path("memprof-demo"),
) -> None:
    """Run an example FastAPI + SQLAlchemy app with planted memory problems, profile it, diagnose it."""
    from memprof.commands._errors import CliError
    from memprof.demo.run import run_demo

    try:
        run_demo(directory, echo=typer.echo)
    except RuntimeError as exc:
        raise CliError(str(exc), code=1) from None

"""Options and helpers shared by the analyzer commands (analyze, compare, report, tail)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from memprof.commands._errors import CliError

if TYPE_CHECKING:
    from memprof.analysis.filters import Filters
    from memprof.analysis.sources import Source
    from memprof.analysis.thresholds import Thresholds

# The analyzer is imported inside the functions, when a command runs: `memprof --help` stays cheap.

Paths = Annotated[
    list[str] | None,
    typer.Argument(
        help="Data dirs (several workers' dirs at once), log files of structlog JSON lines, or - for standard "
        "input. Default: $MEMPROF_DATA_DIR or ./memprof-data.",
        show_default=False,
    ),
]
Since = Annotated[
    str | None,
    typer.Option(help="Only records at or after this time: ISO 8601, Unix time, or an age (30m, 2h, 1d)."),
]
Until = Annotated[
    str | None, typer.Option(help="Only records at or before this time (same forms as --since).")
]
Route = Annotated[str | None, typer.Option(help="Only this route template; a glob works too (/admin/*).")]
Worker = Annotated[str | None, typer.Option(help="Only this worker: host:pid, a pid, or a host.")]
Jobs = Annotated[
    int | None,
    typer.Option(
        help="Processes reading files at once (default: one per core, up to 4, for inputs over 32 MB).", min=1
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (stable, documented in docs/analyzer.md).")]
Threshold = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        metavar="NAME=VALUE",
        help="Where a pattern becomes a finding, e.g. n_plus_one=5 or session_max=1MB (repeatable; the names "
        "and defaults are in docs/analyzer.md).",
        show_default=False,
    ),
]


def default_paths(paths: list[str] | None) -> list[str]:
    """The given paths, or the data dir of the environment."""
    return list(paths) if paths else [os.environ.get("MEMPROF_DATA_DIR") or "memprof-data"]


def make_filters(
    since: str | None, until: str | None, route: str | None, worker: str | None, pattern: str | None = None
) -> Filters:
    """Filters from command-line values; a bad time becomes a CliError naming the option."""
    from memprof.analysis.filters import Filters, parse_time

    try:
        lo = parse_time(since) if since else None
        hi = parse_time(until) if until else None
    except ValueError as exc:
        raise CliError(f"--since/--until: {exc}") from None
    if lo is not None and hi is not None and lo > hi:
        raise CliError("--since is later than --until: nothing can match")
    return Filters(since=lo, until=hi, route=route, worker=worker, pattern=pattern)


def make_thresholds(overrides: list[str] | None) -> Thresholds | None:
    """Thresholds from ``--threshold NAME=VALUE`` options (None: the defaults); a bad one is a CliError."""
    if not overrides:
        return None
    from memprof.analysis.thresholds import parse_thresholds

    try:
        return parse_thresholds(overrides)
    except ValueError as exc:
        raise CliError(f"--threshold: {exc}") from None


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn the analyzer's InputError into the CLI's one-sentence error."""
    from memprof.analysis.sources import InputError

    try:
        yield
    except InputError as exc:
        raise CliError(str(exc)) from None


@contextmanager
def progress_bar(sources: list[Source], enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on standard error over the bytes of ``sources`` (only on a terminal)."""
    if not enabled or not sys.stderr.isatty() or len(sources) < 2:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("reading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("read", total=sum(s.size for s in sources) or None)
        yield lambda n: bar.advance(task, n)


_SEVERITY_COLORS = (("[critical]", "red"), ("[warning]", "yellow"), ("!! ", "red"))


def emit(text: str) -> None:
    """Write plain text to standard output; on a terminal, findings and high-memory lines in colour."""
    if not sys.stdout.isatty():
        typer.echo(text, nl=False)
        return
    for line in text.splitlines(keepends=True):
        color = next((c for marker, c in _SEVERITY_COLORS if marker in line[:16]), None)
        typer.secho(line, nl=False, fg=color, bold=color == "red")

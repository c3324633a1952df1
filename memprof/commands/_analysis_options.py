"""Options and helpers shared by the analyzer commands (analyze, compare, report, tail)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from memprof.commands._errors import CliError

if TYPE_CHECKING:
    from memprof.analysis.filters import Filters
    from memprof.analysis.thresholds import Thresholds

# The analyzer is imported inside the functions, when a command runs: `memprof --help` stays cheap.

Paths = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="PATH...",
        help="Data dirs (several workers' dirs at once), log files of structlog JSON lines, or - for standard "
        "input. Default: $MEMPROF_DATA_DIR or ./memprof-data.",
        show_default=False,
    ),
]
Since = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="Only records at or after this time: ISO 8601, Unix time, or an age (30m, 2h, 1d).",
    ),
]
Until = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="Only records at or before this time (same forms as --since)."),
]
Route = Annotated[
    str | None, typer.Option(metavar="ROUTE", help="Only this route template; a glob works too (/admin/*).")
]
Worker = Annotated[
    str | None, typer.Option(metavar="WORKER", help="Only this worker: host:pid, a pid, or a host.")
]
Jobs = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="Threads the analysis engine (DuckDB) uses (default: one per core, up to 8).", min=1
    ),
]
ShowProgress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress of the reading and computing phases on standard error (default: only on a terminal).",
        show_default=False,
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
    """Turn the analyzer's InputError (and running out of memory) into the CLI's one-sentence error."""
    from memprof.analysis.engine import EngineMemoryError
    from memprof.analysis.sources import InputError

    try:
        yield
    except (InputError, EngineMemoryError) as exc:
        raise CliError(str(exc)) from None


class ProgressLine:
    """Progress of the reading and computing phases on standard error: one rewritten line on a terminal,
    a line per phase and per tenth elsewhere (when asked for with ``--progress``)."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        tenth = int(10 * done / total) if total else 10
        if (phase, tenth if not self.tty else int(100 * done / max(total, 1))) == self.last:
            return
        self.last = (phase, tenth if not self.tty else int(100 * done / max(total, 1)))
        what = f"{self.label}{phase} {100 * done / max(total, 1):3.0f}%"
        if phase == "reading" and total > 1:
            what += f" ({done / 1e6:,.0f} of {total / 1e6:,.0f} MB)"
        what += f", {time.monotonic() - self.started:.1f} s"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + what)
        else:
            sys.stderr.write(what + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


@contextmanager
def progress_line(enabled: bool | None, label: str = "") -> Iterator[Callable[[str, int, int], None] | None]:
    """A :class:`ProgressLine` when ``enabled`` (None: when standard error is a terminal)."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        yield None
        return
    line = ProgressLine(label)
    try:
        yield line
    finally:
        line.close()


_SEVERITY_COLORS = (("[critical]", "red"), ("[warning]", "yellow"), ("!! ", "red"))


def emit(text: str) -> None:
    """Write plain text to standard output; on a terminal, findings and high-memory lines in colour."""
    if not sys.stdout.isatty():
        typer.echo(text, nl=False)
        return
    for line in text.splitlines(keepends=True):
        color = next((c for marker, c in _SEVERITY_COLORS if marker in line[:16]), None)
        typer.secho(line, nl=False, fg=color, bold=color == "red")

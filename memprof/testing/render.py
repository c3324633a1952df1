"""Rendering a :class:`~memprof.testing.results.ReproductionResult`: a rich table plus the summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from memprof._units import format_size
from memprof.testing.results import ReproductionResult


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _size(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else format_size(value, signed=signed)


def table(result: ReproductionResult) -> Table:
    """One row per variant: peak and retained memory, growth per request, queries, instances, session."""
    caption = (
        f"{result.runs} run(s) x {result.repeats} request(s) per variant"
        f"{', each run in a fresh process' if result.isolated else ''}; memory = Python allocations "
        "(tracemalloc) above the start of the request; peak is the median over runs"
    )
    t = Table(title=f"memprof reproduce: {result.request}", caption=caption, caption_justify="left")
    for name, justify in (
        ("variant", "left"),
        ("peak", "right"),
        ("noise", "right"),
        ("retained", "right"),
        ("growth/request", "right"),
        ("rss delta", "right"),
        ("queries", "right"),
        ("instances", "right"),
        ("session", "right"),
        ("status", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    explained = result.explained_by.variable if result.explained_by else None
    for v in result.variants:
        rss = [m.rss_delta for run in v.runs for m in run]
        label = f"[bold]{v.label}[/bold]" if explained is not None and v.variable == explained else v.label
        t.add_row(
            label,
            _size(v.peak),
            _size(v.noise),
            _size(v.retained),
            _size(v.growth_per_request, signed=True),
            _size(max(rss) if rss else None, signed=True),
            _opt(v.queries),
            _opt(v.instances),
            _size(v.session_size),
            ",".join(map(str, v.statuses)),
        )
    return t


def render(result: ReproductionResult, *, file: Any = None) -> None:
    """Print the table and the summary sentences to ``file`` (stdout by default)."""
    console = Console(file=file)
    if not console.is_terminal:  # pipes, files, CliRunner: do not squeeze the table into 80 columns
        console = Console(file=file, width=150)
    console.print(table(result))
    for line in result.summary():
        console.print(line, markup=False, highlight=False)

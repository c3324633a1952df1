"""The ``memprof`` command line: a thin typer app over pure functions.

One module per subcommand in :mod:`memprof.commands`, each a plain function listed in :data:`COMMANDS`
(an explicit list: what the CLI offers does not depend on what was imported first). Commands raise
:class:`memprof.commands._errors.CliError` for people; :func:`main` is the one place that turns it into a
message and an exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from memprof import __version__
from memprof.commands import (
    analyze,
    check,
    compare,
    control,
    demo,
    dump,
    export,
    postmortem,
    report,
    reproduce,
    sign,
    status,
    tail,
)
from memprof.commands._errors import CliError

__all__ = ["COMMANDS", "CliError", "app", "main"]


def version() -> None:
    """Print memprof's version."""
    typer.echo(__version__)


# Subcommand name -> the function behind it, in the order of `memprof --help`.
COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("analyze", analyze.run),
    ("compare", compare.run),
    ("report", report.run),
    ("tail", tail.run),
    ("export", export.run),
    ("postmortem", postmortem.postmortem_command),
    ("dump", dump.dump_command),
    ("status", status.status),
    ("enable", control.enable),
    ("disable", control.disable),
    ("sign", sign.sign),
    ("check", check.check),
    ("reproduce", reproduce.reproduce),
    ("demo", demo.demo),
    ("version", version),
]

app = typer.Typer(
    name="memprof",
    help="Find out why a Python web worker runs out of memory: profile, diagnose, compare, reproduce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's): `--json`, `--since TEXT`, never rich's `--json <bool>` type column.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Find out why a Python web worker runs out of memory: profile, diagnose, compare, reproduce."""


for _name, _command in COMMANDS:
    app.command(_name)(_command)


def main() -> None:
    """Console-script entry point: the one place where errors become messages and exit codes."""
    try:
        app()
    except CliError as exc:
        typer.echo(f"memprof: {exc}", err=True)
        sys.exit(exc.code)

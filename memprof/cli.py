"""The ``memprof`` command line: a thin typer app over pure functions.

Every module in :mod:`memprof.commands` defines ``register(app)`` and is found here, so that one
subcommand is one module. Errors for people are raised as :class:`CliError` and mapped to a clear
message and a non-zero exit code in exactly one place, :func:`main`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import memprof.commands
from memprof import __version__

app = typer.Typer(
    name="memprof",
    help="Find out why a Python web worker runs out of memory: profile, diagnose, compare, reproduce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CliError(Exception):
    """An error a person can act on: printed as one sentence, exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@app.callback()
def _root() -> None:
    """Find out why a Python web worker runs out of memory: profile, diagnose, compare, reproduce."""


@app.command()
def version() -> None:
    """Print memprof's version."""
    typer.echo(__version__)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(memprof.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"memprof.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: the one place where errors become messages and exit codes."""
    try:
        app()
    except CliError as exc:
        typer.echo(f"memprof: {exc}", err=True)
        sys.exit(exc.code)

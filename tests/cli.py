"""Run the ``memprof`` command line the way a person does: through :func:`memprof.cli.main`, the one place
that turns errors into a message and an exit code, capturing what it prints on stdout and stderr."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

from memprof.cli import main


@dataclass
class CliResult:
    """What one ``memprof`` run did: its exit code and what it printed."""

    code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(*args: str, stdin: str | None = None) -> CliResult:
    """``memprof ARGS`` in this process (stdin from ``stdin``); never raises for a non-zero exit."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin
    sys.argv = ["memprof", *args]
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.stdin = saved
    return CliResult(code, out.getvalue(), err.getvalue())

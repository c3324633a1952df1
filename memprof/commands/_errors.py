"""The error commands raise for people: below every command, mapped to a message and an exit code only by
:func:`memprof.cli.main`."""

from __future__ import annotations


class CliError(Exception):
    """An error a person can act on: printed as one sentence, exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code

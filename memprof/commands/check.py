"""``memprof check``: validate the ``MEMPROF_*`` settings of this environment, for deploy pipelines.

A worker with a bad setting runs its app without memprof (and logs why once); ``memprof check`` in the
deploy pipeline catches it before: exit code 0 with a summary of what the workers will do, or 2 with one
sentence naming every bad variable and what it accepts.
"""

from __future__ import annotations

import os
import tempfile
from typing import Annotated

import typer

from memprof.commands._errors import CliError


def _writable(directory: str) -> str | None:
    """Why ``directory`` (created if missing) cannot take memprof's files, or None."""
    from pathlib import Path

    from memprof.files import ensure_private_dir

    try:
        path = ensure_private_dir(Path(directory))
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-", delete=True):
            pass
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__}"
    return None


def check(
    writable: Annotated[
        bool, typer.Option("--writable/--no-writable", help="Also check that the data dir can be written.")
    ] = True,
) -> None:
    """Validate the MEMPROF_* settings (and the data dir); exit 0 when the workers can use them."""
    from memprof.settings import MemprofConfigError, load_settings

    try:
        settings = load_settings()
    except MemprofConfigError as exc:
        raise CliError(str(exc)) from None
    if writable and settings.enabled:
        problem = _writable(os.fspath(settings.data_dir))
        if problem is not None:
            raise CliError(f"MEMPROF_DATA_DIR={str(settings.data_dir)!r} cannot be written: {problem}")
    state = "on" if settings.enabled else "off (MEMPROF_ENABLED=false)"
    typer.echo(
        f"memprof settings are valid: {state}, mode {settings.mode.value}, sample rate "
        f"{settings.effective_sample_rate:g}, data dir {settings.data_dir}"
    )

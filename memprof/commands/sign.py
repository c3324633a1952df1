"""``memprof sign``: print a signed ``X-Memprof-Profile`` header value for targeted mode.

``curl -H "X-Memprof-Profile: $(memprof sign --ttl 300 --path /reports)" https://api/reports/7``
profiles that one request with everything, on a worker running in targeted mode with the same
``MEMPROF_TARGETED_SECRET``.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from memprof.safety.tokens import MAX_TTL_S, TokenError, sign_token


def make_token(secret: str | None, ttl: int, path: str) -> str:
    """The token, or a :class:`memprof.commands._errors.CliError` naming what is missing or wrong."""
    from memprof.commands._errors import CliError

    if not secret:
        raise CliError("MEMPROF_TARGETED_SECRET is not set: export the same secret the workers use")
    if len(secret) < 16:
        raise CliError("MEMPROF_TARGETED_SECRET is too short: use 16 characters or more")
    try:
        return sign_token(secret, ttl=ttl, path=path)
    except TokenError as exc:
        raise CliError(str(exc)) from None


def sign(
    ttl: Annotated[
        int, typer.Option(metavar="SECONDS", help=f"Seconds the token stays valid (1..{MAX_TTL_S}).")
    ] = 300,
    path: Annotated[
        str,
        typer.Option(
            metavar="PATH", help="Only requests to this path or under it (whole segments) are profiled."
        ),
    ] = "/",
) -> None:
    """Print a one-use token for the X-Memprof-Profile header (reads MEMPROF_TARGETED_SECRET)."""
    typer.echo(make_token(os.environ.get("MEMPROF_TARGETED_SECRET"), ttl, path))

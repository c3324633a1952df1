"""``memprof enable`` and ``memprof disable``: switch profiling on every worker at runtime.

Without Redis the change goes through files in the data dir (``control.json`` and the kill-switch
file) that every worker sharing the data dir polls about once a second; with ``MEMPROF_REDIS_URL`` it
goes through Redis keys that every worker of the fleet polls. A worker never goes above its local
``MEMPROF_CONTROL_MAX_MODE`` (default: its ``MEMPROF_MODE``), and an aggressive window always expires.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from memprof.settings import MemprofSettings

MAX_WINDOW_S = 24 * 3600
DEFAULT_AGGRESSIVE_S = 30 * 60
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MODES = ("light", "aggressive", "targeted")


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1d`` or a bare number of seconds."""
    from memprof.commands._errors import CliError

    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise CliError(f"--for {text!r} is not a duration: use e.g. 90s, 30m, 2h or 1d")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_WINDOW_S:
        raise CliError(f"--for {text!r} is longer than the 24h a runtime override may last")
    return seconds


def cli_settings(data_dir: Path | None) -> MemprofSettings:
    """The settings the CLI acts with: ``MEMPROF_*`` variables, ``--data-dir`` winning."""
    from memprof.commands._errors import CliError
    from memprof.settings import MemprofConfigError, load_settings

    try:
        return load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    except MemprofConfigError as exc:
        raise CliError(str(exc)) from None


def _redis(settings: MemprofSettings) -> Any:
    from memprof.safety.control_plane import redis_client

    return redis_client(str(settings.redis_url))


def _redis_failed(settings: MemprofSettings, exc: Exception) -> Exception:
    from memprof.commands._errors import CliError
    from memprof.safety.redaction import redact_text

    url = redact_text(str(settings.redis_url))
    return CliError(f"Redis at {url} did not answer ({type(exc).__name__}); nothing was changed", 3)


def set_override(settings: MemprofSettings, mode: str | None, seconds: int | None) -> dict[str, Any]:
    """Clear the kill switch and set (or, with ``mode`` None, clear) the mode override."""
    from memprof.safety.control_plane import disable_key, mode_key, write_override

    until = None if seconds is None else time.time() + seconds
    if settings.redis_url:
        prefix = settings.redis_prefix
        try:
            client = _redis(settings)
            client.delete(disable_key(prefix))
            if mode is None:
                client.delete(mode_key(prefix))
            else:
                client.set(mode_key(prefix), mode, ex=seconds)
        except Exception as exc:
            raise _redis_failed(settings, exc) from None
        via = "redis"
    else:
        settings.effective_kill_switch_file.unlink(missing_ok=True)
        write_override(settings.data_dir, mode, until)
        via = "control_file"
    return {"mode": mode, "until": until, "via": via}


def set_disabled(settings: MemprofSettings, seconds: int | None) -> dict[str, Any]:
    """Turn profiling off on every worker (the kill switch)."""
    from memprof.safety.control_plane import OFF, disable_key, write_kill_switch, write_override

    until = None if seconds is None else time.time() + seconds
    if settings.redis_url:
        try:
            _redis(settings).set(disable_key(settings.redis_prefix), "1", ex=seconds)
        except Exception as exc:
            raise _redis_failed(settings, exc) from None
        via = "redis"
    elif seconds is not None:
        write_override(settings.data_dir, OFF, until)
        via = "control_file"
    else:
        write_kill_switch(settings.effective_kill_switch_file)
        via = "kill_switch_file"
    return {"disabled": True, "until": until, "via": via}


def _when(until: float | None) -> str:
    if until is None:
        return "until changed"
    return "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))


# readable=False: a data dir that cannot be read gets memprof's one-sentence error, not click's usage text
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", metavar="DIR", help="Data dir (default: MEMPROF_DATA_DIR).", readable=False),
]
For = Annotated[
    str | None, typer.Option("--for", metavar="DURATION", help="How long: 90s, 30m, 2h, 1d (at most 24h).")
]


def enable(
    mode: Annotated[
        str | None,
        typer.Argument(metavar="MODE", help="light, aggressive or targeted; none: back to local settings."),
    ] = None,
    for_: For = None,
    data_dir: DataDir = None,
) -> None:
    """Switch profiling on (or to a mode) on every worker; an aggressive window always expires."""
    from memprof.commands._errors import CliError

    if mode is not None and mode not in MODES:
        raise CliError(f"mode {mode!r} is not one of light, aggressive, targeted")
    seconds = parse_duration(for_) if for_ is not None else None
    if mode == "aggressive" and seconds is None:
        seconds = DEFAULT_AGGRESSIVE_S
    settings = cli_settings(data_dir)
    done = set_override(settings, mode, seconds)
    what = "local settings" if mode is None else f"{mode} {_when(done['until'])}"
    typer.echo(
        f"profiling: {what} (via {done['via']}); workers apply it within about a second, "
        "never above their MEMPROF_CONTROL_MAX_MODE"
    )


def disable(for_: For = None, data_dir: DataDir = None) -> None:
    """Turn profiling off on every worker (the kill switch), until `memprof enable` or --for ends."""
    seconds = parse_duration(for_) if for_ is not None else None
    done = set_disabled(cli_settings(data_dir), seconds)
    typer.echo(f"profiling: off {_when(done['until'])} (via {done['via']})")

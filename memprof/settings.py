"""Configuration: one pydantic-settings object read from ``MEMPROF_*`` environment variables.

A bad value fails at start-up with :class:`MemprofConfigError`, one message naming the variable and
what it accepts. A library must not read the working directory's ``.env`` unasked: an env file is read
only when ``MEMPROF_ENV_FILE`` (or the ``env_file`` argument of :func:`load_settings`) names one.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MEMPROF_"


class Mode(StrEnum):
    """How many requests are profiled and in how much detail."""

    LIGHT = "light"
    AGGRESSIVE = "aggressive"
    TARGETED = "targeted"


# Signals a dump can be asked with (the others stop, kill or mean something to servers).
_CATCHABLE_SIGNALS = {"SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGPWR", "SIGURG"}

DEFAULT_SAMPLE_RATES: dict[Mode, float] = {Mode.LIGHT: 0.01, Mode.AGGRESSIVE: 1.0, Mode.TARGETED: 0.0}


class MemprofConfigError(ValueError):
    """A ``MEMPROF_*`` setting has a value memprof cannot use. The message names it."""


class MemprofSettings(BaseSettings):
    """Every knob of memprof. Each field is read from ``MEMPROF_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=None,
        extra="ignore",
        validate_default=True,
        frozen=True,
    )

    enabled: bool = Field(True, description="Master switch: false makes memprof a passthrough.")
    mode: Mode = Field(Mode.LIGHT, description="light, aggressive or targeted.")
    sample_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fraction of requests profiled (0..1). Default by mode: light 0.01, aggressive 1.0, "
        "targeted 0 (targeted profiles only requests with a valid signed token).",
    )
    data_dir: Path = Field(Path("./memprof-data"), description="Where samples, dumps and worker files go.")
    memory_limit_mb: float | None = Field(
        None,
        gt=0,
        description="The memory limit percentages refer to, in MiB. Default: detected from cgroup v2/v1, "
        "RLIMIT_AS, then physical memory.",
    )
    dump_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="Fraction of the limit that triggers a critical dump."
    )
    dump_hysteresis: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="Full profiling resumes once memory is this fraction of the limit below the dump threshold.",
    )
    dump_cooldown_s: float = Field(
        60.0, ge=0, description="Least time between two threshold dumps, in seconds."
    )
    dump_max_mb: float = Field(
        20.0, gt=0, description="Size cap of one dump file, in MiB (lists are shortened)."
    )
    dump_keep: int = Field(20, ge=1, description="Dump files kept in DATA_DIR/dumps, newest first.")
    dump_max_age_hours: float = Field(168.0, gt=0, description="Dump files older than this are removed.")
    dump_max_total_mb: float = Field(200.0, gt=0, description="Total size of dump files kept, in MiB.")
    dump_signal: str | None = Field(
        None,
        description="A signal (e.g. SIGUSR2) on which the worker writes a dump (trigger signal); "
        "unset: memprof installs no signal handler.",
    )
    watchdog_interval_ms: int = Field(
        250,
        ge=0,
        description="How often the watchdog checks memory and updates the flight recorder; "
        "0 turns the watchdog, threshold dumps, flight recorder and cache-state observations off.",
    )
    state_interval_s: float = Field(
        300.0,
        ge=0,
        description="Cache state is recorded this often, and at start-up, 10, 30 and 60 s after it, at "
        "every dump and at shutdown; 0: only at start-up, dumps and shutdown.",
    )
    overhead_limit_ms: float = Field(
        50.0, gt=0, description="Profiler time per request above which memprof backs off."
    )
    circuit_breaker_failures: int = Field(
        5, ge=1, description="Consecutive internal failures that turn profiling off for a cooldown."
    )
    kill_switch_file: Path | None = Field(
        None, description="A file whose existence disables memprof at once. Default: DATA_DIR/DISABLED."
    )
    redis_url: str | None = Field(
        None, description="Optional shared control plane (kill switch, mode override) for many workers."
    )
    targeted_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="Key that signs targeted-profiling tokens (16+ characters); targeted mode is refused "
        "without it.",
    )
    targeted_rate_limit: float = Field(
        5.0, gt=0, description="Targeted (signed) requests profiled per second at most, per worker."
    )
    targeted_max_skew_s: int = Field(
        30, ge=0, le=600, description="Clock skew tolerated when checking a token's expiry, in seconds."
    )
    control_max_mode: Mode | None = Field(
        None,
        description="The widest mode a runtime override (`memprof enable`, Redis) may switch to. Default: "
        "MEMPROF_MODE, so runtime control can only narrow or disable profiling.",
    )
    redis_prefix: str = Field(
        "memprof:", min_length=1, description="Prefix of the Redis control keys (`<prefix>disable`, ...)."
    )
    control_poll_interval_s: float = Field(
        1.0, ge=0.05, le=60, description="How often the control poller reads the kill switch and overrides."
    )
    sqlalchemy: Literal["auto", "off"] = Field(
        "auto",
        description="auto: the middleware instruments SQLAlchemy (every engine, present and future) when the "
        "app has imported it by the time it starts serving; off: only what `instrument_sqlalchemy()` is "
        "called on.",
    )
    record_sql_params: bool = Field(
        False, description="Record SQL bound parameters (values with secret-looking names are redacted)."
    )
    tracemalloc: int = Field(
        0,
        ge=0,
        le=100,
        description="Frames of Python allocation tracing in aggressive/targeted requests and dumps; 0 is off.",
    )
    n_plus_one_threshold: int = Field(
        10, ge=2, description="A statement repeated this many times in one request is marked as N+1."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Size at which a samples file is rotated, in MiB.")
    max_total_mb: float = Field(
        500.0,
        gt=0,
        description="Total size of samples files kept in the data dir, oldest removed first (a worker "
        "removes only its own closed files and those of workers that are gone).",
    )
    queue_size: int = Field(
        10_000, ge=1, description="Records waiting to be written; past it records are dropped."
    )
    log_events: bool = Field(
        True,
        description="Log one event `memprof.request.completed` (stdlib logger `memprof`, INFO) per profiled request.",
    )

    @field_validator("sqlalchemy", mode="before")
    @classmethod
    def _lower_sqlalchemy(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dump_signal")
    @classmethod
    def _check_dump_signal(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name not in _CATCHABLE_SIGNALS:
            raise ValueError(
                f"not a signal memprof can catch; use one of {', '.join(sorted(_CATCHABLE_SIGNALS))}"
            )
        return name

    @model_validator(mode="after")
    def _check_sample_rate(self) -> MemprofSettings:
        if self.mode is Mode.TARGETED and self.sample_rate not in (None, 0.0):
            raise ValueError(
                "MEMPROF_SAMPLE_RATE must be 0 or unset in targeted mode: only signed requests are profiled"
            )
        if self.mode is Mode.TARGETED and self.targeted_secret is None:
            raise ValueError(
                "targeted mode needs MEMPROF_TARGETED_SECRET (16+ characters) to verify signed tokens"
            )
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("MEMPROF_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.dump_hysteresis >= self.dump_threshold:
            raise ValueError(
                "MEMPROF_DUMP_HYSTERESIS must be below MEMPROF_DUMP_THRESHOLD: full profiling resumes "
                "at the threshold minus the hysteresis"
            )
        return self

    @property
    def effective_sample_rate(self) -> float:
        """The sample rate in force: the configured one, else the mode's default."""
        if self.sample_rate is not None:
            return self.sample_rate
        return DEFAULT_SAMPLE_RATES[self.mode]

    @property
    def effective_kill_switch_file(self) -> Path:
        """The kill-switch file in force: the configured one, else ``DATA_DIR/DISABLED``."""
        return self.kill_switch_file if self.kill_switch_file is not None else self.data_dir / "DISABLED"

    @property
    def memory_limit_bytes(self) -> int | None:
        """The configured limit in bytes, or None when it is to be detected."""
        return None if self.memory_limit_mb is None else int(self.memory_limit_mb * 1024 * 1024)


_SECRET_FIELDS = frozenset({"targeted_secret", "redis_url"})


def _describe(error: Any) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    name = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "MEMPROF settings"
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        accepted = f"expected {ctx['expected']}"
    else:
        accepted = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if loc and loc[0] in _SECRET_FIELDS:
        return f"{name} is not valid: {accepted}"  # never echo a secret into logs
    if loc and not isinstance(value, dict):
        return f"{name}={value!r} is not valid: {accepted}"
    return f"{name}: {accepted}"


def load_settings(env_file: str | os.PathLike[str] | None = None, **overrides: Any) -> MemprofSettings:
    """Read the settings from the environment (and ``env_file`` or ``MEMPROF_ENV_FILE`` when given).

    Keyword ``overrides`` win over the environment. Raises :class:`MemprofConfigError` with one message
    naming every bad variable and what it accepts.
    """
    env_file = env_file or os.environ.get(f"{ENV_PREFIX}ENV_FILE") or None
    if env_file is not None and not Path(env_file).is_file():
        raise MemprofConfigError(f"{ENV_PREFIX}ENV_FILE={str(env_file)!r} is not a readable file")
    try:
        return MemprofSettings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise MemprofConfigError("; ".join(_describe(e) for e in exc.errors())) from None

"""Record models of critical dumps, crash records and cache-state observations.

Kept apart from :mod:`memprof.records.models` (which imports and registers them, so ``memprof.records.models.Dump``,
``Crash`` and ``StateRecord`` are the public names) to keep each module small.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memprof.records.versions import CRASH_VERSION, DUMP_VERSION, STATE_VERSION


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CacheState(_Model):
    """One cache's size at one moment."""

    name: str = Field(
        description="module.function for lru_caches, the engine for SQLAlchemy, the provider's name."
    )
    kind: Literal["lru_cache", "sqlalchemy_compiled", "identity_map", "provider"]
    size: int | None
    maxsize: int | None = Field(description="Null when unbounded.")
    unbounded: bool
    bytes_estimate: int | None = Field(
        None,
        description="Bytes the cache holds (since 1.1): the deep size (sys.getsizeof of everything its "
        "entries reference, modules, classes and functions left out) of up to 20 entries, scaled to its "
        "size, plus its own table. 0 when empty; null for SQLAlchemy's caches and identity maps (their "
        "entries reference the engine, metadata and Session shared by all) and for providers returning "
        "a number.",
    )


class OutsideStatement(_Model):
    """One statement run outside profiled requests (placeholders only, never parameter values)."""

    sql: str
    count: int
    total_ms: float


class SqlOutsideRequests(_Model):
    """SQL this process ran outside profiled requests since it started: start-up, background jobs and, in
    light mode, the unsampled requests. Cumulative counters; the statements by total time."""

    count: int
    total_ms: float
    statements: list[OutsideStatement] = Field(description="The most expensive statements, at most 20.")
    dropped_statements: int = Field(0, description="Distinct statements past the per-process cap.")


class StateRecord(_Model):
    """Cache sizes observed at start-up, periodically and at shutdown (lines of ``state-*.jsonl``), and the
    SQL run outside profiled requests when the SQLAlchemy integration is in use."""

    schema_: Literal["memprof.state"] = Field("memprof.state", alias="schema")
    version: str = STATE_VERSION
    time: float
    pid: int
    host: str
    worker: str
    phase: Literal["startup", "periodic", "dump", "shutdown"] = Field(
        description="startup; periodic (10, 30 and 60 s after start-up, then every MEMPROF_STATE_INTERVAL_S); "
        "dump (the caches of a dump just taken, since 1.1); shutdown."
    )
    caches: list[CacheState]
    sql_outside_requests: SqlOutsideRequests | None = Field(
        None, description="Absent when the SQLAlchemy integration is not loaded."
    )


class InflightRequest(_Model):
    """A request in flight when a dump was taken or a worker died (no query string, no headers)."""

    id: str | None = None
    method: str
    path: str
    route: str | None = Field(None, description="Route template; null before the router matched.")
    started: float | None = Field(None, description="Unix time the request started.")
    elapsed_ms: float | None = None
    rss_start: int | None = None
    heap_start: int | None = Field(None, description="Heap at its start (since 1.1; see memprof.sample).")
    heap_growth: int | None = Field(
        None, description="Its highest heap reading so far minus heap_start (since 1.1)."
    )
    checkpoints: list[str] | None = Field(None, description="Names of the checkpoints reached so far.")
    detail: Literal["checkpoints", "full", "unprofiled"] | None = Field(
        None, description="What memprof records of it; unprofiled requests are named, not measured."
    )


class TypeCount(_Model):
    type: str = Field(description="module.QualifiedName (builtins without module).")
    count: int


class ObjectCounts(_Model):
    """Objects tracked by the garbage collector, by type."""

    total: int
    types: int
    top: list[TypeCount]


class ModuleSize(_Model):
    name: str
    file_bytes: int


class Modules(_Model):
    count: int
    largest: list[ModuleSize]


class ThreadStack(_Model):
    """A thread's stack as ``file:line in func`` frames, outermost first, without local variables."""

    name: str
    ident: int
    daemon: bool | None
    current: bool
    stack: list[str]


class TaskStack(_Model):
    """A pending asyncio task's coroutine stack, without local variables."""

    name: str
    coro: str
    done: bool
    stack: list[str]


class DumpMemory(_Model):
    rss: int
    peak: int
    limit: int
    limit_source: str
    percent: float | None
    threshold: int = Field(description="RSS at which threshold dumps are taken.")
    cgroup: dict[str, Any] = Field(description="version, max, current, anon, file of the container.")
    tracemalloc: dict[str, Any] | None = Field(
        None, description="Top allocation sites, only when tracing is on."
    )
    heap: int | None = Field(
        None,
        description="The Python heap in use (since 1.1): far below RSS, the rest is native memory, "
        "fragmentation or freed memory not returned to the system.",
    )
    heap_source: str | None = Field(None, description="Like memory.heap.source of a sample record.")


class Dump(_Model):
    """The state of a process near its memory limit (or on demand): one ``dumps/dump-*.json`` file."""

    schema_: Literal["memprof.dump"] = Field("memprof.dump", alias="schema")
    version: str = DUMP_VERSION
    trigger: Literal["threshold", "custom", "manual", "memory_error", "signal"]
    name: str | None
    time: float
    pid: int
    host: str
    worker: str
    uptime_s: float | None = None
    memory: DumpMemory
    memory_guard: bool = Field(
        False, description="Whether profiling was reduced to checkpoints by the memory guard."
    )
    request: InflightRequest | None = Field(
        description="The request the dump is about: the caller's own, else the profiled request in flight "
        "whose heap grew the most (its highest heap reading minus its start), else the longest-running."
    )
    inflight: list[InflightRequest]
    inflight_total: int = Field(0, description="Requests in flight, profiled or not.")
    objects: ObjectCounts
    modules: Modules
    threads: list[ThreadStack]
    tasks: list[TaskStack]
    session: dict[str, Any] | None = Field(
        None, description="The request's session (SessionInfo), never values."
    )
    caches: list[CacheState]
    gc: dict[str, Any]
    truncated: bool = Field(False, description="Whether lists were shortened to fit the size cap.")


class Crash(_Model):
    """A worker that died without a clean shutdown (SIGKILL, OOM killer), from its flight-recorder file."""

    schema_: Literal["memprof.crash"] = Field("memprof.crash", alias="schema")
    version: str = CRASH_VERSION
    pid: int
    host: str
    worker: str
    started: float = Field(description="Unix time the worker process started.")
    last_seen: float = Field(description="Unix time of its last flight-recorder update.")
    uptime_s: float
    last_rss: int
    peak: int | None = None
    limit: int | None
    percent: float | None = None
    inflight_total: int = 0
    inflight: list[InflightRequest]
    detected_at: float
    detected_by: Literal["startup", "postmortem"]

"""Record models: the versioned contract between the runtime and the analyzer.

Every record carries ``schema`` (its kind, e.g. ``memprof.sample``) and ``version`` (``MAJOR.MINOR``).
A reader accepts any minor version of a major it knows (unknown fields are kept and ignored) and
refuses an unknown major with :class:`UnsupportedRecord`. The JSON Schema of each record is generated
into ``docs/schema/`` by ``python -m memprof.records.models``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Dump, crash and state records live apart to keep this module small; these are their public names.
from memprof.records.dump import CacheState as CacheState
from memprof.records.dump import Crash, Dump, StateRecord
from memprof.records.dump import InflightRequest as InflightRequest

# Tags, versions and the version check need no pydantic (the analyzer uses them); public names here.
from memprof.records.versions import CRASH_VERSION as CRASH_VERSION
from memprof.records.versions import DUMP_VERSION as DUMP_VERSION
from memprof.records.versions import SAMPLE_SCHEMA as SAMPLE_SCHEMA
from memprof.records.versions import SAMPLE_VERSION as SAMPLE_VERSION
from memprof.records.versions import STATE_VERSION as STATE_VERSION
from memprof.records.versions import VERSIONS
from memprof.records.versions import UnsupportedRecord as UnsupportedRecord
from memprof.records.versions import check_version as check_version


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInfo(_Model):
    """What was asked and how it ended. ``path`` never includes the query string."""

    id: str = Field(description="Random id of this request, to find it in dumps and logs.")
    method: str = Field(description="HTTP method.")
    path: str = Field(description="Raw path, without the query string.")
    route: str = Field(description="Route template (e.g. /users/{user_id}); the raw path without a router.")
    status: int | None = Field(description="Response status; null when no response was started.")
    duration_ms: float = Field(description="From request_start to request_end (background tasks included).")
    error: str | None = Field(None, description="Type name of the exception the app raised, if any.")


class Concurrency(_Model):
    """Requests in flight in this process (this one included)."""

    at_start: int = Field(description="Requests in flight when this one started.")
    max: int = Field(description="The most requests in flight seen while this one ran.")


class HeapInfo(_Model):
    """The Python heap in use around the request, in bytes: unlike RSS, it still shows what a request
    allocates once the worker reuses memory freed by earlier requests (a warm heap)."""

    start: int = Field(description="Heap at request_start.")
    peak: int = Field(
        description="Highest heap reading of the request: at its checkpoints, its SQL statements' ends "
        "and the garbage collections in between (readings close together share one: see "
        "docs/performance.md, Heap readings)."
    )
    end: int = Field(description="Heap at request_end.")
    source: str = Field(
        description="`tracemalloc`: exact bytes traced by tracemalloc (tracing was on). "
        "`allocated_blocks_x96`: an estimate, `sys.getallocatedblocks()` x 96 bytes: pymalloc blocks in "
        "use, where one allocation over 512 bytes counts as one block (big strings and bytes are missed; "
        "RSS shows them)."
    )


class MemoryInfo(_Model):
    """Memory of the process around the request, in bytes."""

    limit: int | None = Field(description="The memory limit percentages refer to.")
    limit_source: str | None = Field(
        None, description="setting, cgroup_v2, cgroup_v1, rlimit_as or physical."
    )
    rss_start: int = Field(description="RSS at request_start.")
    rss_end: int = Field(description="RSS at request_end.")
    rss_delta: int = Field(description="rss_end - rss_start.")
    peak: int = Field(description="Process peak RSS (getrusage) at the end of the request.")
    raised_peak: bool = Field(description="Whether the process peak rose during this request.")
    concurrency: Concurrency = Field(description="Requests in flight in this process.")
    shared: bool = Field(
        description="True when other requests were in flight: the delta is the process's, not the request's."
    )
    heap: HeapInfo | None = Field(
        None,
        description="The Python heap around the request (since 1.1); null when tracing was turned on or "
        "off while the request ran. Shared with the requests in flight like RSS.",
    )


class Checkpoint(_Model):
    """One named point of the request: time since start and RSS there."""

    name: str = Field(description="Checkpoint name.")
    ms: float = Field(description="Milliseconds since request_start.")
    rss: int = Field(description="RSS at this point.")
    heap: int | None = Field(None, description="Heap at this point (since 1.1; source in memory.heap).")
    rss_before: int | None = Field(None, description="For a checkpoint span: RSS when it was entered.")
    heap_before: int | None = Field(None, description="For a checkpoint span: heap when it was entered.")
    duration_ms: float | None = Field(None, description="For a checkpoint span: how long it took.")
    error: bool | None = Field(None, description="For a checkpoint span: whether it exited by an exception.")


class Statement(_Model):
    """One distinct SQL statement of a request (text with placeholders, never parameter values)."""

    sql: str = Field(
        description="Statement text with placeholders, string literals masked as '?', capped at 2000 characters."
    )
    count: int = Field(description="Executions in this request.")
    total_ms: float = Field(description="Time in the database driver's execute, all executions.")
    max_ms: float
    rss_before: int | None = Field(None, description="RSS before the first execution.")
    rss_after: int | None = Field(None, description="RSS after the last execution (rows fetched).")
    rss_delta_max: int = Field(0, description="Largest RSS growth over one execution and its fetch.")
    heap_before: int | None = Field(None, description="Heap before the first execution (since 1.1).")
    heap_after: int | None = Field(None, description="Heap after the last execution (rows fetched).")
    heap_delta_max: int | None = Field(
        None, description="Largest heap growth over one execution and its fetch (since 1.1)."
    )
    rows: int = Field(0, description="Rows fetched (counted as fetched; SQLite's rowcount is -1).")
    instances: int = Field(
        0,
        description="ORM instances built from its rows (0 with instrument_sqlalchemy(count_instances=False)).",
    )
    n_plus_one: bool = Field(False, description="Executed at least MEMPROF_N_PLUS_ONE_THRESHOLD times.")
    lazy: bool = Field(False, description="Whether executions came from a lazy relationship load.")
    frame: str | None = Field(
        None,
        description="First application frame that executed it (file:line in func): at its first "
        "execution, and again when it reached the N+1 threshold. Application frames exclude installed "
        "packages, the standard library, the venv's scripts and what lies beyond memprof's middleware (the "
        "server, a test driver); null when no application code stands between the server and the SQL.",
    )
    loop: str | None = Field(
        None,
        description="Where it repeats (file:line in func): the first line of the loop in the innermost "
        "application frame that stayed the same frame across consecutive executions (at its second "
        "execution and again at the N+1 threshold); a service's for loop over a shared repository helper "
        "names the service's line. Null when it ran once.",
    )
    library: str | None = Field(
        None,
        description="The installed package's frame that issued it (package/module.py:line in func), when a "
        "library (an admin, a repository layer) stands between the application and SQLAlchemy; `frame` is "
        "then the application code that called into it.",
    )
    params: list[Any] | None = Field(
        None,
        description="Parameter sets of its first executions (at most 3), only with MEMPROF_RECORD_SQL_PARAMS; "
        "values with secret-looking names or shapes, and every positional value, are '[REDACTED]'.",
    )


class Queries(_Model):
    """SQL of one request. Light requests carry only ``count`` and ``total_ms``."""

    count: int
    total_ms: float
    statements: list[Statement] | None = Field(None, description="Distinct statements, first executed first.")
    dropped_statements: int = Field(0, description="Executions of statements past the cap of 200 distinct.")
    n_plus_one: list[Statement] | None = Field(None, description="Statements repeated past the threshold.")


class ModelCounts(_Model):
    """ORM activity of one mapped class in one request."""

    loaded: int = Field(0, description="Instances built from rows (the `load` event).")
    created: int = Field(0, description="Instances inserted (pending to persistent).")
    updated: int = Field(0, description="Instances an UPDATE was emitted for.")
    deleted: int = Field(0, description="Instances a DELETE was emitted for.")
    rss_first: int | None = Field(None, description="RSS at the first event for this class.")
    rss_last: int | None = Field(None, description="RSS at the last event for this class.")


class Models(_Model):
    """Per mapped class (``module.Class`` name) counts, and identity-map sizes of Sessions used."""

    classes: dict[str, ModelCounts]
    identity_maps: list[int] = Field(
        default_factory=list,
        description="Per Session used: the largest identity-map size seen (before each statement, at "
        "flushes, transaction ends and request end). A Session closed right after its last query shows "
        "its size before that query.",
    )
    dropped_classes: int = Field(0, description="Events of classes past the cap of 200.")


class LoaderCriteria(_Model):
    """One ``with_loader_criteria`` option applied to a mapped class during a request."""

    criteria: str = Field(description="A short description: lambda or expression, and where it was defined.")
    kind: Literal["lambda", "expression"]
    where: str | None = Field(None, description="file:line where a lambda criteria was defined.")
    applied: int = Field(description="Times it was applied to an executed statement.")
    statements: list[str] = Field(default_factory=list, description="Statements it applied to (capped).")
    duplicates: int = Field(0, description="Times it was applied twice to one statement.")


class Scopes(_Model):
    """Loader criteria ("global scopes") per mapped class."""

    classes: dict[str, list[LoaderCriteria]]
    dropped_criteria: int = Field(0, description="Applications of criteria past the cap of 100.")


class EngineState(_Model):
    """One engine's state when the request ended (or when a dump was taken)."""

    name: str = Field(description="Driver name and database (driver:database); never the password.")
    compiled_cache: int | None = Field(None, description="Entries in the compiled-statement cache.")
    compiled_cache_max: int | None = Field(None, description="Its capacity.")
    pool_checked_out: int | None = Field(None, description="Connections checked out of the pool.")
    pool_size: int | None = Field(None, description="Pool size (QueuePool); null for other pools.")


class SessionKey(_Model):
    """A session key and the serialized size of its value (never the value)."""

    key: str
    size: int


class SessionInfo(_Model):
    """HTTP session size analysis of one request."""

    size: int = Field(description="Serialized size of the whole session in bytes.")
    keys: int
    largest: list[SessionKey] = Field(description="Largest keys, top 20.")
    id_hash: str | None = Field(None, description="Hash of the session identity, to follow one session.")
    source: str = "scope"


class Sample(_Model):
    """One profiled request (a line of ``samples-*.jsonl`` and the ``memprof.request.completed`` event)."""

    schema_: Literal["memprof.sample"] = Field("memprof.sample", alias="schema", description="Record kind.")
    version: str = Field(SAMPLE_VERSION, description="Record version, MAJOR.MINOR.")
    time: float = Field(description="Unix time the request started.")
    pid: int = Field(description="Process id of the worker.")
    host: str = Field(description="Host name of the worker.")
    worker: str = Field(description="host:pid, the worker that served the request.")
    mode: str = Field(description="Mode in force: light, aggressive or targeted.")
    detail: Literal["checkpoints", "full"] = Field(
        description="checkpoints (light mode, memory guard) or full (queries, models, scopes, session)."
    )
    request: RequestInfo = Field(description="What was asked and how it ended.")
    memory: MemoryInfo = Field(description="Memory of the process around the request, in bytes.")
    checkpoints: list[Checkpoint] = Field(
        description="request_start, app_start, custom ones, response_start, response_end, request_end."
    )
    dropped_checkpoints: int = Field(0, description="Checkpoints past the cap of 200 per request.")
    queries: Queries | None = Field(None, description="SQL statements (SQLAlchemy integration).")
    models: Models | None = Field(None, description="ORM instances per mapped class.")
    scopes: Scopes | None = Field(None, description="Loader criteria applied per mapped class.")
    session: SessionInfo | None = Field(None, description="HTTP session size and largest keys.")
    engines: list[EngineState] | None = Field(None, description="Engine state: caches, pool.")
    overhead_ms: float = Field(description="Time memprof itself spent on this request.")

    model_config = ConfigDict(extra="allow", populate_by_name=True)


RECORD_MODELS: dict[str, tuple[type[BaseModel], str]] = {
    SAMPLE_SCHEMA: (Sample, SAMPLE_VERSION),
    "memprof.dump": (Dump, DUMP_VERSION),
    "memprof.crash": (Crash, CRASH_VERSION),
    "memprof.state": (StateRecord, STATE_VERSION),
}
assert RECORD_MODELS.keys() == VERSIONS.keys(), "a record kind without a model, or a model without a version"


def parse_record(record: dict[str, Any]) -> BaseModel:
    """Validate a record dict against its model (after :func:`check_version`)."""
    tag = check_version(record)
    model, _ = RECORD_MODELS[tag]
    return model.model_validate(record)


def write_json_schemas(directory: Path) -> list[Path]:
    """Write the JSON Schema of every record model into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for tag, (model, version) in sorted(RECORD_MODELS.items()):
        schema = model.model_json_schema(by_alias=True)
        schema["$id"] = f"{tag}/{version}"
        path = directory / f"{tag.split('.', 1)[1]}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


def write_field_reference(path: Path) -> Path:
    """Write the Markdown reference of every record field (docs/records.md)."""
    from memprof.records.docs import field_reference

    path.write_text(field_reference(RECORD_MODELS))
    return path


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/schema")
    for p in write_json_schemas(out):
        print(p)
    print(write_field_reference(out.parent / "records.md"))

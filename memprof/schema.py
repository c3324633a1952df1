"""Record models: the versioned contract between the runtime and the analyzer.

Every record carries ``schema`` (its kind, e.g. ``memprof.sample``) and ``version`` (``MAJOR.MINOR``).
A reader accepts any minor version of a major it knows (unknown fields are kept and ignored) and
refuses an unknown major with :class:`UnsupportedRecord`. The JSON Schema of each record is generated
into ``docs/schema/`` by ``python -m memprof.schema``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Dump, crash and state records live apart to keep this module small; these are their public names.
from memprof._schema_dump import CRASH_VERSION, DUMP_VERSION, STATE_VERSION, Crash, Dump, StateRecord
from memprof._schema_dump import CacheState as CacheState
from memprof._schema_dump import InflightRequest as InflightRequest

SAMPLE_SCHEMA = "memprof.sample"
SAMPLE_VERSION = "1.0"


class UnsupportedRecord(ValueError):
    """A record whose schema tag or major version this memprof does not know."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInfo(_Model):
    """What was asked and how it ended. ``path`` never includes the query string."""

    id: str = Field(description="Random id of this request, to find it in dumps and logs.")
    method: str
    path: str = Field(description="Raw path, without the query string.")
    route: str = Field(description="Route template (e.g. /users/{user_id}); the raw path without a router.")
    status: int | None = Field(description="Response status; null when no response was started.")
    duration_ms: float
    error: str | None = Field(None, description="Type name of the exception the app raised, if any.")


class Concurrency(_Model):
    """Requests in flight in this process (this one included)."""

    at_start: int
    max: int = Field(description="The most requests in flight seen while this one ran.")


class MemoryInfo(_Model):
    """Memory of the process around the request, in bytes."""

    limit: int | None
    limit_source: str | None = None
    rss_start: int
    rss_end: int
    rss_delta: int
    peak: int = Field(description="Process peak RSS (getrusage) at the end of the request.")
    raised_peak: bool = Field(description="Whether the process peak rose during this request.")
    concurrency: Concurrency
    shared: bool = Field(
        description="True when other requests were in flight: the delta is the process's, not the request's."
    )


class Checkpoint(_Model):
    """One named point of the request: time since start and RSS there."""

    name: str
    ms: float
    rss: int
    traced: int | None = Field(None, description="tracemalloc traced bytes, when tracing is on.")
    rss_before: int | None = Field(None, description="For a checkpoint span: RSS when it was entered.")
    duration_ms: float | None = Field(None, description="For a checkpoint span: how long it took.")
    error: bool | None = Field(None, description="For a checkpoint span: whether it exited by an exception.")


class Statement(_Model):
    """One distinct SQL statement of a request (text with placeholders, never parameter values)."""

    sql: str = Field(description="Statement text with placeholders, capped in length.")
    count: int
    total_ms: float
    max_ms: float
    rss_before: int | None = Field(None, description="RSS before the first execution.")
    rss_after: int | None = Field(None, description="RSS after the last execution (rows fetched).")
    rss_delta_max: int = Field(0, description="Largest RSS growth over one execution and its fetch.")
    rows: int = Field(0, description="Rows fetched (counted as fetched; SQLite's rowcount is -1).")
    instances: int = Field(0, description="ORM instances built from its rows.")
    n_plus_one: bool = False
    lazy: bool = Field(False, description="Whether executions came from a lazy relationship load.")
    frame: str | None = Field(
        None, description="First application frame that executed it: file:line in func."
    )
    params: list[Any] | None = Field(
        None, description="Redacted parameters, only with MEMPROF_RECORD_SQL_PARAMS."
    )


class Queries(_Model):
    """SQL of one request. Light requests carry only ``count`` and ``total_ms``."""

    count: int
    total_ms: float
    statements: list[Statement] | None = None
    dropped_statements: int = 0
    n_plus_one: list[Statement] | None = Field(None, description="Statements repeated past the threshold.")


class ModelCounts(_Model):
    """ORM activity of one mapped class in one request."""

    loaded: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    rss_first: int | None = None
    rss_last: int | None = None


class Models(_Model):
    """Per mapped class (``module.Class`` name) counts, and identity-map sizes of Sessions used."""

    classes: dict[str, ModelCounts]
    identity_maps: list[int] = Field(default_factory=list)


class LoaderCriteria(_Model):
    """One ``with_loader_criteria`` option applied to a mapped class during a request."""

    criteria: str = Field(description="A short description: lambda or expression, and where it was defined.")
    kind: Literal["lambda", "expression"]
    where: str | None = Field(None, description="file:line where the criteria was defined.")
    applied: int
    statements: list[str] = Field(default_factory=list, description="Statements it applied to (capped).")
    duplicates: int = Field(0, description="Times it was applied twice to one statement.")


class Scopes(_Model):
    """Loader criteria ("global scopes") per mapped class."""

    classes: dict[str, list[LoaderCriteria]]


class EngineState(_Model):
    """One engine's state when the request ended."""

    name: str = Field(description="Dialect and database name; never the password.")
    compiled_cache: int | None = None
    compiled_cache_max: int | None = None
    pool_checked_out: int | None = None
    pool_size: int | None = None


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

    schema_: Literal["memprof.sample"] = Field("memprof.sample", alias="schema")
    version: str = SAMPLE_VERSION
    time: float = Field(description="Unix time the request started.")
    pid: int
    host: str
    worker: str = Field(description="host:pid, the worker that served the request.")
    mode: str
    detail: Literal["checkpoints", "full"]
    request: RequestInfo
    memory: MemoryInfo
    checkpoints: list[Checkpoint]
    dropped_checkpoints: int = 0
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


def check_version(record: dict[str, Any]) -> str:
    """Return the record's schema tag, or raise :class:`UnsupportedRecord` naming what is wrong."""
    tag = record.get("schema")
    if tag not in RECORD_MODELS:
        raise UnsupportedRecord(f"unknown record schema {tag!r}")
    _model, current = RECORD_MODELS[tag]
    version = str(record.get("version", ""))
    if version.split(".", 1)[0] != current.split(".", 1)[0]:
        raise UnsupportedRecord(
            f"{tag} version {version!r} is not supported (this memprof reads {current.split('.')[0]}.x); "
            "upgrade memprof to read it"
        )
    return str(tag)


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


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/schema")
    for p in write_json_schemas(out):
        print(p)

"""The analyzer's schema: the typed tables records are read into (documented in docs/analyzer.md).

One table per record kind, lists of a record kept as nested columns (a warehouse reads them with
``UNNEST``), plus ``files`` (where every row came from) and ``problems`` (what was skipped, and why).
Every row carries ``file_id`` and ``line`` (0 for a document): ``files.path || ':' || line`` is the record
reference findings cite. ``memprof export --parquet`` writes these tables as they are.
"""

from __future__ import annotations

import json

CHECKPOINT = "STRUCT(name VARCHAR, ms DOUBLE, rss BIGINT, rss_before BIGINT, heap BIGINT)"
STATEMENT = (
    "STRUCT(sql VARCHAR, count BIGINT, total_ms DOUBLE, max_ms DOUBLE, rows BIGINT, instances BIGINT, "
    "rss_delta_max BIGINT, lazy BOOLEAN, n_plus_one BOOLEAN, frame VARCHAR, loop VARCHAR, library VARCHAR, "
    "heap_before BIGINT, heap_after BIGINT, heap_delta_max BIGINT)"
)
MODEL = "MAP(VARCHAR, STRUCT(loaded BIGINT, created BIGINT, updated BIGINT, deleted BIGINT))"
SCOPE = 'MAP(VARCHAR, STRUCT(criteria VARCHAR, kind VARCHAR, "where" VARCHAR, applied BIGINT, duplicates BIGINT)[])'
SESSION_KEY = "STRUCT(key VARCHAR, size BIGINT)"
ENGINE = "STRUCT(name VARCHAR, compiled_cache BIGINT, compiled_cache_max BIGINT)"
CACHE = "STRUCT(name VARCHAR, kind VARCHAR, size BIGINT, maxsize BIGINT, unbounded BOOLEAN, bytes_estimate BIGINT)"
OUTSIDE = (
    "STRUCT(count BIGINT, total_ms DOUBLE, statements STRUCT(sql VARCHAR, count BIGINT, total_ms DOUBLE)[])"
)
INFLIGHT = "STRUCT(method VARCHAR, route VARCHAR, started DOUBLE, rss_start BIGINT)"

# Column name -> type, in order: the single definition DDL, Parquet reading and the docs come from.
SCHEMA: dict[str, dict[str, str]] = {
    "files": {"file_id": "INTEGER", "path": "VARCHAR", "kind": "VARCHAR"},
    "samples": {
        "file_id": "INTEGER", "line": "INTEGER", "time": "DOUBLE", "worker": "VARCHAR", "host": "VARCHAR",
        "pid": "BIGINT", "mode": "VARCHAR", "detail": "VARCHAR", "method": "VARCHAR", "path": "VARCHAR",
        "route": "VARCHAR", "status": "INTEGER", "duration_ms": "DOUBLE", "error": "VARCHAR",
        "mem_limit": "BIGINT", "rss_start": "BIGINT", "rss_end": "BIGINT", "rss_peak": "BIGINT",
        "growth": "BIGINT", "rss_growth": "BIGINT", "heap_start": "BIGINT", "heap_peak": "BIGINT",
        "heap_end": "BIGINT", "heap_source": "VARCHAR", "shared": "BOOLEAN", "query_count": "BIGINT",
        "instances": "BIGINT",
        "session_size": "BIGINT", "session_id": "VARCHAR", "checkpoints": f"{CHECKPOINT}[]",
        "statements": f"{STATEMENT}[]", "flagged": f"{STATEMENT}[]", "models": MODEL,
        "scopes": SCOPE, "session_keys": f"{SESSION_KEY}[]", "engines": f"{ENGINE}[]",
    },
    "states": {
        "file_id": "INTEGER", "line": "INTEGER", "time": "DOUBLE", "worker": "VARCHAR", "host": "VARCHAR",
        "pid": "BIGINT", "phase": "VARCHAR", "caches": f"{CACHE}[]", "outside": OUTSIDE,
    },
    "dumps": {
        "file_id": "INTEGER", "line": "INTEGER", "time": "DOUBLE", "worker": "VARCHAR", "host": "VARCHAR",
        "pid": "BIGINT", "trigger": "VARCHAR", "name": "VARCHAR", "rss": "BIGINT", "mem_limit": "BIGINT",
        "percent": "DOUBLE", "route": "VARCHAR", "phase": "VARCHAR", "inflight": "VARCHAR[]",
        "objects": "STRUCT(type VARCHAR, count BIGINT)[]", "frames": "VARCHAR[]", "caches": f"{CACHE}[]",
    },
    "crashes": {
        "file_id": "INTEGER", "line": "INTEGER", "worker": "VARCHAR", "host": "VARCHAR", "pid": "BIGINT",
        "started": "DOUBLE", "last_seen": "DOUBLE", "uptime_s": "DOUBLE", "last_rss": "BIGINT",
        "mem_limit": "BIGINT", "inflight": f"{INFLIGHT}[]",
    },
    "problems": {"file_id": "INTEGER", "line": "INTEGER", "reason": "VARCHAR", "detail": "VARCHAR"},
}  # fmt: skip

# What a column holds, where its name does not say it all (docs/analyzer.md is generated from this).
COLUMN_DOCS = {
    "files.file_id": "the id every other table refers to", "files.path": "the file as given or found (or `-`)",
    "files.kind": "samples, states, document, worker, exported, ...",
    "*.file_id": "the file the record came from (`files`)", "*.line": "its line (0 for a document)",
    "samples.time": "Unix time the request started", "samples.worker": "host:pid",
    "samples.route": "route template, cut to 300 characters", "samples.path": "raw path, cut to 2000",
    "samples.duration_ms": "0 when not recorded", "samples.mem_limit": "the record's `memory.limit`",
    "samples.rss_peak": "highest RSS seen: checkpoints and the end",
    "samples.rss_growth": "the RSS rise: rss_peak - rss_start, or the largest rise over one SQL statement if larger",
    "samples.growth": "per-request memory: heap_peak - heap_start where recorded (1.1), else rss_growth",
    "samples.heap_start": "`memory.heap.start` (bytes; null before 1.1)", "samples.heap_source":
    "`memory.heap.source`: `tracemalloc` (exact) or `allocated_blocks_x96` (an estimate)",
    "samples.query_count": "`queries.count` (0 when absent)",
    "samples.instances": "ORM objects built (statements' instances or models loaded, the larger); null "
    "unless `detail` is full", "samples.session_size": "`session.size`; null without a session",
    "samples.session_id": "`session.id_hash`", "samples.checkpoints": "as recorded",
    "samples.statements": "`queries.statements`", "samples.flagged": "`queries.n_plus_one`",
    "samples.models": "`models.classes`", "samples.scopes": "`scopes.classes`",
    "samples.session_keys": "`session.largest`", "states.outside": "`sql_outside_requests`",
    "dumps.route": "the route of the request the dump is about", "dumps.phase": "`after <last checkpoint>`",
    "dumps.inflight": "routes in flight", "dumps.objects": "object counts, top 200 types",
    "dumps.frames": "distinct stack frames of every thread and task",
    "crashes.inflight": "the requests in flight when the worker died",
    "problems.reason": "unsupported, invalid record, invalid JSON, truncated line, unreadable, ...",
    "problems.detail": "the malformed field, the refused version, the error",
}  # fmt: skip


def create_tables() -> str:
    """The DDL of every table."""
    return "\n".join(
        f"CREATE TABLE {name} ({', '.join(f'{col} {typ}' for col, typ in cols.items())});"
        for name, cols in SCHEMA.items()
    )


# -- reading JSON lines: the structure ``from_json`` extracts (numbers as text: see engine.MACROS) --------
_N = "VARCHAR"  # a scalar field: its text, checked strictly
_D = "DOUBLE"  # a number inside a list: a value of another type reads as null
_STMT = {"sql": "VARCHAR", "count": _D, "total_ms": _D, "max_ms": _D, "rows": _D, "instances": _D,
         "rss_delta_max": _D, "lazy": "BOOLEAN", "n_plus_one": "BOOLEAN", "frame": "VARCHAR", "loop": "VARCHAR",
         "library": "VARCHAR", "heap_before": _D, "heap_after": _D, "heap_delta_max": _D}  # fmt: skip
# Every sample line is parsed for its core; the details (SQL, models, criteria, session keys, engines) only
# when the line has some (DETAIL_GATE): most samples have none, and parsing absent lists is not free.
SAMPLE_JSON = json.dumps(
    {
        "schema": "VARCHAR", "version": "VARCHAR", "time": _D, "pid": _D, "host": "VARCHAR",
        "worker": "VARCHAR", "mode": "VARCHAR", "detail": "VARCHAR",
        "request": {"method": "VARCHAR", "path": "VARCHAR", "route": "VARCHAR", "status": _D,
                    "duration_ms": _N, "error": "VARCHAR"},
        "memory": {"limit": _D, "rss_start": _D, "rss_end": _D, "shared": "BOOLEAN",
                   "heap": {"start": _D, "peak": _D, "end": _D, "source": "VARCHAR"}},
        "checkpoints": [{"name": "VARCHAR", "ms": _D, "rss": _D, "rss_before": _D, "heap": _D}],
        "queries": {"count": _D},
    }
)  # fmt: skip
DETAIL_JSON = json.dumps(
    {
        "queries": {"statements": [_STMT], "n_plus_one": [_STMT]},
        "models": {"classes": "MAP(VARCHAR, STRUCT(loaded DOUBLE, created DOUBLE, updated DOUBLE, deleted DOUBLE))"},
        "scopes": {"classes": 'MAP(VARCHAR, STRUCT(criteria VARCHAR, kind VARCHAR, "where" VARCHAR, applied DOUBLE, duplicates DOUBLE)[])'},
        "session": {"size": _N, "id_hash": "VARCHAR", "largest": [{"key": "VARCHAR", "size": _D}]},
        "engines": [{"name": "VARCHAR", "compiled_cache": _D, "compiled_cache_max": _D}],
    }
)  # fmt: skip
DETAIL_GATE = "(j.detail = 'full' OR (j.detail IS NULL AND strpos(text, '\"statements\"') > 0))"
STATE_JSON = json.dumps(
    {
        "schema": "VARCHAR", "version": "VARCHAR", "time": _D, "pid": _D, "host": "VARCHAR",
        "worker": "VARCHAR", "phase": "VARCHAR",
        "caches": [{"name": "VARCHAR", "kind": "VARCHAR", "size": _D, "maxsize": _D, "unbounded": "BOOLEAN",
                    "bytes_estimate": _D}],
        "sql_outside_requests": {"count": _D, "total_ms": _D,
                                 "statements": [{"sql": "VARCHAR", "count": _D, "total_ms": _D}]},
    }
)  # fmt: skip


def _duck(structure: object) -> str:
    if isinstance(structure, dict):
        return "STRUCT(" + ", ".join(f'"{k}" {_duck(v)}' for k, v in structure.items()) + ")"
    if isinstance(structure, list):
        return _duck(structure[0]) + "[]"
    return str(structure)


def _merged(core: dict[str, object], detail: dict[str, object]) -> dict[str, object]:
    out = dict(core)
    for key, value in detail.items():
        both = out.get(key)
        out[key] = {**both, **value} if isinstance(both, dict) and isinstance(value, dict) else value
    return out


# The whole structure as ``read_json`` columns (the fast path: a file whose every line parses).
SAMPLE_COLUMNS = {k: _duck(v) for k, v in _merged(json.loads(SAMPLE_JSON), json.loads(DETAIL_JSON)).items()}
STATE_COLUMNS = {k: _duck(v) for k, v in json.loads(STATE_JSON).items()}

_STMT_BAD = (
    "s.sql IS NULL OR mp_bad_i(s.count) OR mp_bad_d(s.total_ms) OR mp_bad_d(s.max_ms) "
    "OR mp_bad_i(s.rows) OR mp_bad_i(s.instances) OR mp_bad_i(s.rss_delta_max) OR mp_bad_i(s.heap_before) "
    "OR mp_bad_i(s.heap_after) OR mp_bad_i(s.heap_delta_max)"
)
_STMT_ROW = (
    "{'sql': mp_text(s.sql), 'count': coalesce(mp_i(s.count), 0), 'total_ms': coalesce(s.total_ms, 0), "
    "'max_ms': coalesce(s.max_ms, 0), 'rows': coalesce(mp_i(s.rows), 0), "
    "'instances': coalesce(mp_i(s.instances), 0), 'rss_delta_max': coalesce(mp_i(s.rss_delta_max), 0), "
    "'lazy': coalesce(s.lazy, false), 'n_plus_one': coalesce(s.n_plus_one, false), 'frame': mp_text(s.frame), "
    "'loop': mp_text(s.loop), 'library': mp_text(s.library), 'heap_before': mp_i(s.heap_before), "
    "'heap_after': mp_i(s.heap_after), 'heap_delta_max': mp_i(s.heap_delta_max)}"
)

# The first malformed field of a parsed sample ``j`` (details: ``d``; NULL: none); a record with one is skipped whole.
SAMPLE_BAD = f"""CASE
    WHEN j.time IS NULL OR mp_bad_d(j.time) THEN 'time'
    WHEN j.request.route IS NULL THEN 'request.route'
    WHEN j.memory.rss_start IS NULL OR mp_bad_i(j.memory.rss_start) THEN 'memory.rss_start'
    WHEN j.memory.rss_end IS NULL OR mp_bad_i(j.memory.rss_end) THEN 'memory.rss_end'
    WHEN mp_bad_i(j.memory.limit) THEN 'memory.limit'
    WHEN mp_bad_i(j.memory.heap.start) OR mp_bad_i(j.memory.heap.peak) OR mp_bad_i(j.memory.heap."end")
        THEN 'memory.heap'
    WHEN mp_bad_i(j.pid) THEN 'pid'
    WHEN mp_bad_i(j.request.status) THEN 'request.status'
    WHEN mp_bad_num(j.request.duration_ms) THEN 'request.duration_ms'
    WHEN list_bool_or(list_transform(j.checkpoints, lambda c: c.name IS NULL OR c.rss IS NULL
         OR mp_bad_i(c.rss) OR mp_bad_i(c.rss_before) OR mp_bad_i(c.heap) OR mp_bad_d(c.ms))) THEN 'checkpoints'
    WHEN mp_bad_i(j.queries.count) THEN 'queries.count'
    WHEN list_bool_or(list_transform(d.queries.statements, lambda s: {_STMT_BAD})) THEN 'queries.statements'
    WHEN list_bool_or(list_transform(d.queries.n_plus_one, lambda s: {_STMT_BAD})) THEN 'queries.n_plus_one'
    WHEN list_bool_or(list_transform(map_values(d.models.classes), lambda m: mp_bad_i(m.loaded)
         OR mp_bad_i(m.created) OR mp_bad_i(m.updated) OR mp_bad_i(m.deleted))) THEN 'models'
    WHEN list_bool_or(list_transform(flatten(map_values(d.scopes.classes)), lambda c: mp_bad_i(c.applied)
         OR mp_bad_i(c.duplicates))) THEN 'scopes'
    WHEN d.session IS NOT NULL AND (d.session.size IS NULL OR mp_bad_int(d.session.size)) THEN 'session.size'
    WHEN list_bool_or(list_transform(d.session.largest, lambda k: mp_bad_i(k.size))) THEN 'session.largest'
    WHEN list_bool_or(list_transform(d.engines, lambda e: mp_bad_i(e.compiled_cache)
         OR mp_bad_i(e.compiled_cache_max))) THEN 'engines'
END"""

# The ``samples`` row of a valid parsed sample ``j`` (``file_id`` and ``line`` come first, from the reader).
SAMPLE_ROW = f"""
    j.time AS time,
    mp_name(coalesce(j.worker, coalesce(j.host, 'None') || ':' || coalesce(mp_i(j.pid)::VARCHAR, 'None'))) AS worker,
    mp_name(j.host) AS host, mp_i(j.pid) AS pid, mp_name(j.mode) AS mode, mp_name(j.detail) AS detail,
    mp_name(j.request.method) AS method, mp_text(j.request.path) AS path, mp_name(j.request.route) AS route,
    mp_i(j.request.status)::INTEGER AS status, coalesce(mp_num(j.request.duration_ms), 0) AS duration_ms,
    mp_name(j.request.error) AS error, mp_i(j.memory.limit) AS mem_limit,
    mp_i(j.memory.rss_start) AS rss_start, mp_i(j.memory.rss_end) AS rss_end,
    greatest(mp_i(j.memory.rss_end), TRY_CAST(list_max(list_transform(j.checkpoints, lambda c: c.rss)) AS BIGINT))
        AS rss_peak,
    greatest(rss_peak - rss_start, TRY_CAST(list_max(list_transform(d.queries.statements,
        lambda s: s.rss_delta_max)) AS BIGINT)) AS rss_growth,
    mp_i(j.memory.heap.start) AS heap_start, mp_i(j.memory.heap.peak) AS heap_peak,
    mp_i(j.memory.heap."end") AS heap_end, mp_name(j.memory.heap.source) AS heap_source,
    coalesce(greatest(heap_peak, heap_end, heap_start) - heap_start, rss_growth) AS growth,
    coalesce(j.memory.shared, false) AS shared,
    coalesce(mp_i(j.queries.count), 0) AS query_count,
    CASE WHEN j.detail = 'full' THEN greatest(
        coalesce(TRY_CAST(list_sum(list_transform(d.queries.statements, lambda s: s.instances)) AS BIGINT), 0),
        coalesce(TRY_CAST(list_sum(list_transform(map_values(d.models.classes), lambda m: m.loaded)) AS BIGINT), 0))
    END AS instances,
    mp_int(d.session.size) AS session_size, mp_name(d.session.id_hash) AS session_id,
    TRY_CAST(j.checkpoints AS {CHECKPOINT}[]) AS checkpoints,
    TRY_CAST(d.queries.statements AS {STATEMENT}[]) AS statements,
    TRY_CAST(d.queries.n_plus_one AS {STATEMENT}[]) AS flagged,
    TRY_CAST(d.models.classes AS {MODEL}) AS models,
    TRY_CAST(d.scopes.classes AS {SCOPE}) AS scopes,
    TRY_CAST(d.session.largest AS {SESSION_KEY}[]) AS session_keys,
    TRY_CAST(d.engines AS {ENGINE}[]) AS engines
"""

STATE_BAD = """CASE
    WHEN j.time IS NULL OR mp_bad_d(j.time) THEN 'time'
    WHEN mp_bad_i(j.pid) THEN 'pid'
    WHEN list_bool_or(list_transform(j.caches, lambda c: mp_bad_i(c.size) OR mp_bad_i(c.maxsize)
        OR mp_bad_i(c.bytes_estimate)))
        THEN 'caches'
    WHEN mp_bad_i(j.sql_outside_requests.count) OR mp_bad_d(j.sql_outside_requests.total_ms)
        OR list_bool_or(list_transform(j.sql_outside_requests.statements, lambda s: mp_bad_i(s.count)
        OR mp_bad_d(s.total_ms))) THEN 'sql_outside_requests'
END"""

STATE_ROW = f"""
    j.time AS time, mp_name(coalesce(j.worker, coalesce(j.host, 'None') || ':' || coalesce(mp_i(j.pid)::VARCHAR, 'None'))) AS worker,
    mp_name(j.host) AS host, mp_i(j.pid) AS pid, mp_name(j.phase) AS phase,
    TRY_CAST(list_filter(j.caches, lambda c: c.size IS NOT NULL) AS {CACHE}[]) AS caches,
    TRY_CAST(j.sql_outside_requests AS {OUTSIDE}) AS outside
"""

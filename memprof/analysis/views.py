"""The filtered views every statistic reads: ``s`` (samples), ``d`` (dumps), ``c`` (crashes) and ``st``
(states) hold the records that match the :class:`~memprof.analysis.filters.Filters`."""

from __future__ import annotations

from memprof.analysis.engine import Engine, quote
from memprof.analysis.filters import Filters

_SAMPLE_TEXT = """lower(concat_ws(chr(10), route, path,
    array_to_string(list_transform(statements, lambda x: coalesce(x.sql, '') || chr(10) || coalesce(x.frame, '')), chr(10)),
    array_to_string(map_keys(models), chr(10)),
    array_to_string(list_transform(map_entries(scopes), lambda e: e.key || chr(10)
        || array_to_string(list_transform(e.value, lambda x: coalesce(x.criteria, '')), chr(10))), chr(10)),
    array_to_string(list_transform(session_keys, lambda k: coalesce(k.key, '')), chr(10)),
    array_to_string(list_transform(checkpoints, lambda x: coalesce(x.name, '')), chr(10))))"""
_DUMP_TEXT = """lower(concat_ws(chr(10), name, trigger, route, array_to_string(inflight, chr(10)),
    array_to_string(frames, chr(10))))"""


def _time(column: str, f: Filters) -> list[str]:
    out = []
    if f.since is not None:
        out.append(f"{column} >= {float(f.since)!r}")
    if f.until is not None:
        out.append(f"{column} <= {float(f.until)!r}")
    if out:
        out = [f"({column} IS NOT NULL AND {' AND '.join(out)})"]
    return out


def _worker(f: Filters) -> list[str]:
    if f.worker is None:
        return []
    w = quote(f.worker)
    return [f"({w} = worker OR {w} = pid::VARCHAR OR {w} = host)"]


def _route(expr: str, f: Filters) -> str:
    r = quote(f.route or "")
    return f"({expr} = {r} OR {expr} GLOB {r})"


def create_views(e: Engine, f: Filters) -> None:
    """(Re)create the filtered views for ``f``."""
    where = [*_time("time", f), *_worker(f)]
    if f.route is not None:
        where.append(_route("route", f))
    if f.pattern:
        where.append(f"contains({_SAMPLE_TEXT}, {quote(f.pattern.lower())})")
    e.sql(f"CREATE OR REPLACE TEMP VIEW s AS SELECT * FROM samples WHERE {' AND '.join(where) or 'true'}")

    where = [*_time("time", f), *_worker(f)]
    if f.route is not None:
        where.append(
            f"coalesce(list_bool_or(list_transform(list_prepend(route, inflight), lambda r: {_route('r', f)})), false)"
        )
    if f.pattern:
        where.append(f"contains({_DUMP_TEXT}, {quote(f.pattern.lower())})")
    e.sql(f"CREATE OR REPLACE TEMP VIEW d AS SELECT * FROM dumps WHERE {' AND '.join(where) or 'true'}")

    where = [*_time("last_seen", f), *_worker(f)]
    if f.route is not None:
        where.append(
            f"coalesce(list_bool_or(list_transform(inflight, lambda r: {_route('r.route', f)})), false)"
        )
    if f.pattern:
        pattern = quote(f.pattern.lower())
        where.append(
            f"coalesce(list_bool_or(list_transform(inflight, lambda r: contains(lower(r.route), {pattern}))), false)"
        )
    e.sql(f"CREATE OR REPLACE TEMP VIEW c AS SELECT * FROM crashes WHERE {' AND '.join(where) or 'true'}")

    where = [*_time("time", f), *_worker(f), *(["false"] if f.route is not None else [])]  # no route to match
    e.sql(f"CREATE OR REPLACE TEMP VIEW st AS SELECT * FROM states WHERE {' AND '.join(where) or 'true'}")


def filtered_out(e: Engine) -> int:
    """Records the filters left out (samples, dumps, crashes, states)."""
    return int(
        e.value(
            "SELECT (SELECT count(*) FROM samples) - (SELECT count(*) FROM s) + (SELECT count(*) FROM dumps) "
            "- (SELECT count(*) FROM d) + (SELECT count(*) FROM crashes) - (SELECT count(*) FROM c) "
            "+ (SELECT count(*) FROM states) - (SELECT count(*) FROM st)"
        )
    )

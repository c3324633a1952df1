"""Combining partial results: a Collector and LoadReport built from the first files with those built
from the next ones, so that the result equals reading all files in order in one pass.

Used to read a large data dir on several cores (:mod:`memprof.analysis.parallel`). Every rule mirrors
the sequential update: sums add, maxima keep the earlier record on ties, "last" keeps the later one.
"""

from __future__ import annotations

from typing import Any

from memprof.analysis.collect import TOP_HIGH, Collector
from memprof.analysis.events import MAX_CACHES, MAX_CRASHES, MAX_DUMPS, EventCollector
from memprof.analysis.phases import PhaseAcc, Plan
from memprof.analysis.sources import MAX_EXAMPLES, LoadReport
from memprof.analysis.sqlagg import MAX_CLASSES, MAX_KEYS, MAX_SESSIONS, MAX_STATEMENTS, SqlAggregates


def merge_reports(a: LoadReport, b: LoadReport) -> LoadReport:
    """Add ``b``'s counts to ``a`` (returned)."""
    a.files += b.files
    a.lines += b.lines
    a.records.update(b.records)
    a.ignored += b.ignored
    a.skipped += b.skipped
    a.reasons.update(b.reasons)
    a.examples.extend(b.examples[: MAX_EXAMPLES - len(a.examples)])
    return a


def merge_collectors(a: Collector, b: Collector) -> Collector:
    """Fold ``b`` (built from files after ``a``'s, with the same file ids) into ``a`` (returned)."""
    if b.files[: len(a.files)] != a.files[: len(b.files)]:
        raise ValueError("collectors of different file lists cannot be merged")
    if len(b.files) > len(a.files):
        for f in b.files[len(a.files) :]:
            a._file_ids[f] = len(a.files)
            a.files.append(f)
    for route, rb in b.routes.items():
        ra = a.routes.get(route)
        if ra is None:
            a.routes[route] = rb
            continue
        for col in ("rss", "growth", "duration", "queries", "instances", "session"):
            getattr(ra, col).extend(getattr(rb, col))
        for status, n in rb.statuses.items():
            ra.statuses[status] = ra.statuses.get(status, 0) + n
        ra.errors += rb.errors
        if ra.max_ref is None or (rb.max_ref is not None and rb.max_ref[0] > ra.max_ref[0]):
            ra.max_ref = rb.max_ref
    for name, wb in b.workers.items():
        wa = a.workers.get(name)
        if wa is None:
            a.workers[name] = wb
            continue
        wa.time.extend(wb.time)
        wa.rss.extend(wb.rss)
        wa.base.extend(wb.base)
        wa.first = min(wa.first, wb.first, key=lambda x: x[0])
        wa.last = wb.last if wb.last[0] >= wa.last[0] else wa.last
        wa.limit = wb.limit or wa.limit
    _merge_phases(a.phases, b.phases)
    _merge_sql(a.sql, b.sql)
    _merge_events(a.events, b.events)
    # sequence numbers continue across shards (b's files come after a's); sorted ascending is a heap
    offset = a.samples
    high = a.high + [(g, seq - offset, ref, route, worker, t) for g, seq, ref, route, worker, t in b.high]
    a.high = sorted(high, key=lambda e: (e[0], e[1]))[-TOP_HIGH:]
    if a.recent_n:
        recent = a.recent + [(t, seq + offset, rec, ref) for t, seq, rec, ref in b.recent]
        a.recent = sorted(recent, key=lambda e: (e[0], e[1]))[-a.recent_n :]
    a.samples += b.samples
    a.filtered_out += b.filtered_out
    a.invalid += b.invalid
    a.other_routes += b.other_routes
    return a


def _merge_phases(a: PhaseAcc, b: PhaseAcc) -> None:
    for names, pb in b._plans.items():
        pa = a._plans.get(names)
        if pa is None:
            intervals = [(i, a._phase(b.names[pid]), span) for i, pid, span in pb.intervals]
            pa = a._plans[names] = Plan(pb.k, intervals, list(pb.spans))
        for col in ("rss", "before", "files", "lines"):
            getattr(pa, col).extend(getattr(pb, col))


def _merge_sql(a: SqlAggregates, b: SqlAggregates) -> None:
    a.dropped_statements += b.dropped_statements
    for sql, sb in b.statements.items():
        sa = a.statements.get(sql)
        if sa is None:
            if len(a.statements) >= MAX_STATEMENTS:
                a.dropped_statements += 1
            else:
                a.statements[sql] = sb
            continue
        for f in ("executions", "requests", "total_ms", "rows", "instances", "n_plus_one"):
            setattr(sa, f, getattr(sa, f) + getattr(sb, f))
        sa.max_ms = max(sa.max_ms, sb.max_ms)
        sa.max_count = max(sa.max_count, sb.max_count)
        if sb.max_rss_delta > sa.max_rss_delta or sa.worst_ref is None:
            sa.max_rss_delta, sa.worst_ref = max(sa.max_rss_delta, sb.max_rss_delta), sb.worst_ref
        sa.lazy = sa.lazy or sb.lazy
        sa.n_plus_one_refs.extend(sb.n_plus_one_refs[: 5 - len(sa.n_plus_one_refs)])
        sa.n1_last_ref = sb.n1_last_ref or sa.n1_last_ref
        sa.frames.update(sb.frames)
        sa.routes.update(sb.routes)
        sa.n1_frames.update(sb.n1_frames)
        sa.n1_routes.update(sb.n1_routes)
        if sb.cartesian and (
            sa.cartesian is None
            or sb.cartesian[0] / sb.cartesian[1] > sa.cartesian[0] / max(sa.cartesian[1], 1)
        ):
            sa.cartesian = sb.cartesian
        if sb.large and (sa.large is None or sb.large[:2] > sa.large[:2]):
            sa.large = sb.large
    _merge_keyed(a.models, b.models, MAX_CLASSES, ("loaded", "created", "updated", "deleted", "requests"),
                 "max_loaded")  # fmt: skip
    _merge_keyed(a.scopes, b.scopes, MAX_KEYS, ("applied", "requests", "duplicates"), "max_applied")
    for key, eb in b.engines.items():
        ea = a.engines.get(key)
        if ea is None:
            if len(a.engines) < MAX_KEYS:
                a.engines[key] = eb
            continue
        ea["first"] = min(ea["first"], eb["first"], key=lambda x: x[0])
        ea["last"] = eb["last"] if eb["last"][0] >= ea["last"][0] else ea["last"]
        ea["max"] = max(ea["max"], eb["max"])
        ea["decreases"] += eb["decreases"]
        ea["observations"] += eb["observations"]
    a.session_count += b.session_count
    if b.max_session and (a.max_session is None or b.max_session[0] > a.max_session[0]):
        a.max_session = b.max_session
    for key, kb in b.session_keys.items():
        ka = a.session_keys.get(key)
        if ka is None:
            if len(a.session_keys) < MAX_KEYS:
                a.session_keys[key] = kb
            continue
        if kb[0] > ka[0]:
            ka[0], ka[2] = kb[0], kb[2]
        ka[1] += kb[1]
    for ident, vb in b.sessions.items():
        va = a.sessions.get(ident)
        if va is None:
            if len(a.sessions) < MAX_SESSIONS:
                a.sessions[ident] = vb
            continue
        if vb[0] < va[0]:
            va[0], va[1] = vb[0], vb[1]
        if vb[2] >= va[2]:
            va[2], va[3], va[6] = vb[2], vb[3], vb[6]
        va[4] += vb[4]
        if vb[5] > va[5] or (vb[5] == va[5] and vb[8] < va[8]):
            va[5], va[7], va[8] = vb[5], vb[7], vb[8]


def _merge_keyed(a: dict[Any, Any], b: dict[Any, Any], cap: int, sums: tuple[str, ...], top: str) -> None:
    for key, xb in b.items():
        xa = a.get(key)
        if xa is None:
            if len(a) < cap:
                a[key] = xb
            continue
        for f in sums:
            xa[f] += xb[f]
        if xb[top] > xa[top]:
            xa[top], xa["ref"] = xb[top], xb["ref"]
        xa["routes"].update(xb["routes"])


def _merge_events(a: EventCollector, b: EventCollector) -> None:
    room = MAX_DUMPS - len(a.dumps)
    a.dumps.extend(b.dumps[:room])
    a.dropped_dumps += b.dropped_dumps + max(0, len(b.dumps) - room)
    a.frames.update(b.frames)
    a.crashes.extend(b.crashes[: MAX_CRASHES - len(a.crashes)])
    a.state_records += b.state_records
    a.filtered_out += b.filtered_out
    for worker, latest in b.sql_outside.items():
        if worker not in a.sql_outside or latest[0] >= a.sql_outside[worker][0]:
            a.sql_outside[worker] = latest
    for key, cb in b.caches.items():
        ca = a.caches.get(key)
        if ca is None:
            if len(a.caches) < MAX_CACHES:
                a.caches[key] = cb
            continue
        if cb["first"][0] < ca["first"][0]:
            ca["first"] = cb["first"]
        if cb["last"][0] >= ca["last"][0]:
            if cb["first"][1] < ca["last"][1]:
                ca["decreases"] += 1
            ca["last"] = cb["last"]
        ca["min"] = min(ca["min"], cb["min"])
        ca["max"] = max(ca["max"], cb["max"])
        ca["observations"] += cb["observations"]
        ca["decreases"] += cb["decreases"]

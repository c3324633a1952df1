"""How many bytes a cache holds, estimated from a bounded sample of its entries (background thread only).

An entry's size is its deep size: ``sys.getsizeof`` of the key, the value and everything they reference
(``gc.get_referents``), each object counted once, without descending into modules, classes, functions,
code or frames (shared by everything, owned by no entry). The estimate is the sampled entries' bytes
scaled to the cache's size, plus the cache's own table. At most ``SAMPLE_ENTRIES`` entries and
``NODES_PER_CACHE`` objects are visited per cache, ``NODES_PER_OBSERVATION`` per observation; entries
whose object graph is larger than that are undercounted. Never on the request path: it costs about a
microsecond per object visited, under the GIL.
"""

from __future__ import annotations

import gc
import itertools
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

SAMPLE_ENTRIES = 20
NODES_PER_CACHE = 5_000
NODES_PER_OBSERVATION = 100_000
# A bounded lru_cache's entries are reached only through the list of all its referents (3 per entry):
# past this many entries that list would be megabytes, built in a process that may be near its limit.
MAX_BOUNDED_ENTRIES = 50_000

_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
)


class Budget:
    """Objects that may still be visited in one observation."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: int = NODES_PER_OBSERVATION) -> None:
        self.nodes = nodes


def deep_size(roots: Iterable[Any], max_nodes: int, seen: set[int] | None = None) -> tuple[int, int]:
    """(bytes, objects visited) of everything reachable from ``roots``, each object once, at most
    ``max_nodes`` objects; ``seen`` (ids) is shared across calls to count shared objects once."""
    seen = set() if seen is None else seen
    stack = list(roots)
    total = nodes = 0
    while stack and nodes < max_nodes:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        nodes += 1
        try:
            total += sys.getsizeof(obj, 0)
            stack.extend(gc.get_referents(obj))
        except Exception:  # a hostile __sizeof__: that object is left out
            continue
    return total, nodes


Sample = tuple[list[Any], int]  # objects to size (keys and values), and how many entries they are


def _pairs(pairs: Iterable[tuple[Any, Any]]) -> Sample:
    roots: list[Any] = []
    for key, value in pairs:
        roots += (key, value)
    return roots, len(roots) // 2


def _lru_sample(func: Any, limit: int) -> tuple[Any, Sample] | None:
    """The cache table and a sample of up to ``limit`` entries of a C ``functools.lru_cache`` wrapper.

    Its traversal (``gc.get_referents``) yields its type, then key, result and link type of each entry
    of a bounded cache, then the cache table just before the wrapped function. An unbounded cache's
    table maps keys to results directly. None when the wrapper does not look like that (another
    implementation): no estimate then.
    """
    refs = gc.get_referents(func)
    wrapped = getattr(func, "__wrapped__", None)
    at = next((i for i, ref in enumerate(refs) if ref is wrapped), -1)
    if at < 1 or not isinstance(refs[at - 1], dict):
        return None
    table = refs[at - 1]
    links = refs[1 : at - 1]
    if links:  # bounded: (key, result, link type) per entry
        return table, _pairs((links[i], links[i + 1]) for i in range(0, min(len(links) - 1, 3 * limit), 3))
    try:
        return table, _pairs(list(itertools.islice(table.items(), limit)))
    except RuntimeError:  # changed size while read: no estimate this time
        return None


def _container_sample(value: Any, limit: int) -> Sample | None:
    try:
        if isinstance(value, Mapping):
            return _pairs(list(itertools.islice(value.items(), limit)))
        items = list(itertools.islice(iter(value), limit))
        return items, len(items)
    except Exception:  # not iterable, or changed while read
        return None


def estimate(sample: Sample | None, size: int, table: Any, budget: Budget) -> int | None:
    """Bytes of a cache of ``size`` entries from a sample of them, plus ``table``, its own container."""
    if size == 0:
        return 0
    if sample is None or not sample[1] or budget.nodes <= 0:
        return None
    roots, count = sample
    sampled, nodes = deep_size(roots, min(NODES_PER_CACHE, budget.nodes))
    budget.nodes -= nodes
    own = sys.getsizeof(table, 0) if table is not None else 0
    return int(own + sampled * size / count)


def lru_bytes(func: Any, size: int, maxsize: int | None, budget: Budget) -> int | None:
    """Estimated bytes held by an ``lru_cache``-wrapped function with ``size`` entries (None past
    ``MAX_BOUNDED_ENTRIES`` entries of a bounded one)."""
    if size == 0:
        return 0
    if maxsize is not None and size > MAX_BOUNDED_ENTRIES:
        return None
    found = _lru_sample(func, SAMPLE_ENTRIES)
    if found is None:
        return None
    table, sample = found
    return estimate(sample, size, table, budget)


def container_bytes(value: Any, size: int, budget: Budget) -> int | None:
    """Estimated bytes held by a container a state provider returned (a dict, list, set, ...)."""
    return estimate(_container_sample(value, SAMPLE_ENTRIES), size, value, budget)

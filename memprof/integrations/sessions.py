"""Session analysis: how big a request's HTTP session is and which keys make it big.

For full-detail profiles (aggressive and targeted requests) the session is read when the request ends:
``scope["session"]`` as Starlette's ``SessionMiddleware`` (and anything following its convention)
leaves it, or the mapping a provider registered with :func:`register_session_provider` returns for
server-side stores. The section holds the serialized size of the whole session, its largest keys with
their sizes (key names and sizes only, never values) and a hash of the session identity. Sizes are
computed on the request path, so the profile keeps no reference to the app's objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from memprof import events
from memprof.profile import RequestProfile
from memprof.runtime import register_hooks

Scope = MutableMapping[str, Any]
SessionProvider = Callable[[Scope], "Mapping[str, Any] | tuple[Mapping[str, Any], str | None] | None"]

TOP_KEYS = 20
MAX_KEYS = 2_000  # keys measured in one session; past it the rest is counted, not measured
MAX_KEY_CHARS = 200
# Keys whose value identifies a session (hashed, never recorded), in order of preference.
ID_KEYS = ("_session_id", "session_id", "sid", "_id", "id")

_providers: list[SessionProvider] = []


def register_session_provider(fn: SessionProvider) -> None:
    """Let memprof analyze sessions kept server-side (Redis, a database, ...).

    ``fn(scope)`` is called when a full-detail request ends and returns the session mapping (or a
    ``(mapping, identity)`` tuple, ``identity`` being the session id, which memprof only hashes), or None
    when the request has no session. It runs on the request path: return data you already hold.
    """
    if fn not in _providers:
        _providers.append(fn)


def unregister_session_provider(fn: SessionProvider) -> None:
    """Remove a provider registered with :func:`register_session_provider`."""
    if fn in _providers:
        _providers.remove(fn)


def _serialized_size(value: Any) -> int:
    """Bytes of ``value`` as a JSON session cookie or store would hold it (repr for the unserializable)."""
    try:
        return len(json.dumps(value, separators=(",", ":"), default=repr).encode())
    except (TypeError, ValueError, RecursionError):
        return len(repr(value).encode(errors="replace"))


def hash_identity(identity: str) -> str:
    """A short stable hash of a session identity: lets one session be followed, never reversed."""
    return hashlib.blake2b(identity.encode(), digest_size=8, person=b"memprof-session").hexdigest()


def analyze_session(
    session: Mapping[str, Any], identity: str | None = None, source: str = "scope"
) -> dict[str, Any]:
    """The ``session`` section (see :class:`memprof.records.models.SessionInfo`) of one session mapping."""
    sizes: list[tuple[int, str]] = []
    total = 2  # the braces of a JSON object
    # dict's own methods: a session class that tracks access must not see memprof read it.
    items = dict.items(session) if isinstance(session, dict) else session.items()
    get = dict.get.__get__(session) if isinstance(session, dict) else session.get
    for i, (key, value) in enumerate(items):
        if i >= MAX_KEYS:
            break
        name = str(key)
        size = _serialized_size(value) + len(json.dumps(name).encode()) + 2  # "key": value,
        total += size
        sizes.append((size, name[:MAX_KEY_CHARS]))
    sizes.sort(reverse=True)
    if identity is None:
        for key in ID_KEYS:
            candidate = get(key)
            if isinstance(candidate, str | int) and not isinstance(candidate, bool):
                identity = str(candidate)
                break
    return {
        "size": total,
        "keys": len(session),
        "largest": [{"key": name, "size": size} for size, name in sizes[:TOP_KEYS]],
        "id_hash": hash_identity(identity) if identity else None,
        "source": source,
    }


def session_of(scope: Scope) -> dict[str, Any] | None:
    """Analyze the session of a request scope: a registered provider first, then ``scope["session"]``."""
    for provider in list(_providers):
        result = provider(scope)
        if result is None:
            continue
        if isinstance(result, tuple):
            mapping, identity = result
            return analyze_session(mapping, identity, source="provider")
        return analyze_session(result, source="provider")
    session = scope.get("session")
    if isinstance(session, Mapping):
        return analyze_session(session)
    return None


class SessionSection:
    """The section collector attached to a profile: plain numbers and key names only."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_record(self) -> dict[str, Any]:
        """The ``session`` section of the sample record."""
        return self.data


def on_finish(profile: RequestProfile, scope: Scope) -> None:
    """Finish hook: attach ``profile.sections["session"]`` when the request has a session."""
    data = session_of(scope)
    if data is not None:
        profile.sections["session"] = SessionSection(data)


def install() -> None:
    """Measure sessions in full profiles and name them in dumps (idempotent; called by the middleware)."""
    register_hooks(on_finish=on_finish)
    events.add_dump_section("session", session_of)

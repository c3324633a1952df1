"""``ProfiledClient``: an httpx client for an ASGI app under memprof in aggressive mode.

Every response made through it carries the ``sample`` record memprof built for that request, so a test
can assert on checkpoints, queries, models and session size::

    with ProfiledClient(app) as client:
        response = client.get("/dashboard")
        profile = profile_of(response)
        assert profile.query_count is not None and profile.query_count < 20

It is Starlette's ``TestClient`` (an ``httpx.Client``) around ``MemprofMiddleware``; the app's own
responses and exceptions are untouched (server exceptions are raised into the test, as TestClient does).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the httpx2 package and warns once on import when only httpx is there;
    # the warning is about our dependency choice, not the user's code.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from memprof.middleware import MemprofMiddleware
from memprof.profile import RequestProfile
from memprof.settings import MemprofSettings, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

EXTENSION = "memprof"


class ResponseProfile:
    """What memprof recorded about one request: its ``sample`` record and handy views of its sections.

    Sections an integration did not attach (no SQLAlchemy instrumented, no session) are None.
    """

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    @property
    def request(self) -> dict[str, Any]:
        """Method, path, route template, status, duration."""
        return dict(self.record.get("request") or {})

    @property
    def memory(self) -> dict[str, Any]:
        """RSS at start and end, process peak, concurrency."""
        return dict(self.record.get("memory") or {})

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint in order (the five built-in ones and the app's own)."""
        return list(self.record.get("checkpoints") or [])

    @property
    def checkpoint_names(self) -> list[str]:
        """The names of the checkpoints, in order."""
        return [str(cp.get("name")) for cp in self.checkpoints]

    @property
    def queries(self) -> dict[str, Any] | None:
        """The ``queries`` section (SQLAlchemy integration), or None."""
        return _section(self.record, "queries")

    @property
    def models(self) -> dict[str, Any] | None:
        """The ``models`` section (SQLAlchemy integration), or None."""
        return _section(self.record, "models")

    @property
    def session(self) -> dict[str, Any] | None:
        """The ``session`` section (sessions integration), or None."""
        return _section(self.record, "session")

    @property
    def query_count(self) -> int | None:
        """Statements executed by the request, or None without query data."""
        queries = self.queries
        count = queries.get("count") if queries else None
        return int(count) if isinstance(count, int | float) else None

    @property
    def instances(self) -> int | None:
        """ORM instances loaded by the request (all classes), or None without model data."""
        models = self.models
        classes = models.get("classes") if models else None
        if not isinstance(classes, dict):
            return None
        return sum(int(c.get("loaded", 0) or 0) for c in classes.values() if isinstance(c, dict))

    @property
    def instances_by_class(self) -> dict[str, int]:
        """Loaded instances per mapped class (empty without model data)."""
        models = self.models
        classes = models.get("classes") if models else None
        if not isinstance(classes, dict):
            return {}
        return {name: int(c.get("loaded", 0) or 0) for name, c in classes.items() if isinstance(c, dict)}

    @property
    def session_size(self) -> int | None:
        """Serialized session size in bytes, or None without session data."""
        session = self.session
        size = session.get("size") if session else None
        return int(size) if isinstance(size, int | float) else None

    def __repr__(self) -> str:
        req = self.request
        return (
            f"<ResponseProfile {req.get('method')} {req.get('path')} status={req.get('status')} "
            f"queries={self.query_count} instances={self.instances} session={self.session_size}>"
        )


def _section(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = record.get(name)
    return value if isinstance(value, dict) else None


def profile_of(response: httpx.Response) -> ResponseProfile:
    """The memprof profile of a response made through a :class:`ProfiledClient`.

    Raises LookupError when the response did not go through one (or memprof did not profile it).
    """
    profile = response.extensions.get(EXTENSION)
    if not isinstance(profile, ResponseProfile):
        raise LookupError(
            "this response carries no memprof profile: make the request with the memprof_client fixture "
            "or a memprof.testing.ProfiledClient"
        )
    return profile


class _Recorder:
    """The outermost ASGI layer: remembers the profile the middleware put in each request's scope."""

    def __init__(self, app: MemprofMiddleware) -> None:
        self.app = app
        self.captured: list[RequestProfile] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            profile = scope.get("memprof") if scope.get("type") == "http" else None
            if isinstance(profile, RequestProfile):
                self.captured.append(profile)


def profiled_settings(data_dir: Path, **overrides: Any) -> MemprofSettings:
    """Settings for a test client: on, aggressive, every request, no log events, records in ``data_dir``,
    and no watchdog (a test is not the place for threshold dumps, and its data dir is temporary)."""
    values: dict[str, Any] = {
        "watchdog_interval_ms": 0,
        "enabled": True,
        "mode": "aggressive",
        "sample_rate": 1.0,
        "data_dir": data_dir,
        "log_events": False,
    }
    values.update(overrides)
    return load_settings(**values)


class ProfiledClient(TestClient):
    """Starlette's TestClient (an ``httpx.Client``) around ``MemprofMiddleware(app)`` in aggressive mode.

    ``profiles`` lists the profile of every request made, in order; each response also carries its own
    (see :func:`profile_of`). Use it as a context manager to run the app's lifespan.
    """

    def __init__(
        self,
        app: Any,
        *,
        settings: MemprofSettings | None = None,
        data_dir: str | Path | None = None,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        **kwargs: Any,
    ) -> None:
        if settings is None:
            if data_dir is None:
                self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                    prefix="memprof-client-", ignore_cleanup_errors=True
                )
                data_dir = self._tmp.name
            else:
                self._tmp = None
            settings = profiled_settings(Path(data_dir))
        else:
            self._tmp = None
        self.middleware = MemprofMiddleware(app, settings=settings)
        self._recorder = _Recorder(self.middleware)
        self.profiles: list[ResponseProfile] = []
        super().__init__(
            self._recorder, base_url=base_url, raise_server_exceptions=raise_server_exceptions, **kwargs
        )

    @property
    def last(self) -> ResponseProfile | None:
        """The profile of the most recent request, if any."""
        return self.profiles[-1] if self.profiles else None

    def compact(self) -> None:
        """Forget every profile but the last and those with the most queries and instances (what the
        max_queries and max_instances markers check), so that a repeated test body keeps memory flat."""
        if len(self.profiles) <= 1:
            return
        keep = [self.profiles[-1]]
        for key in (lambda p: p.query_count or 0, lambda p: p.instances or 0):
            worst = max(self.profiles, key=key)
            if all(worst is not k for k in keep):
                keep.insert(0, worst)
        self.profiles[:] = keep

    def send(self, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        """Send like httpx does, then attach memprof's record of the request to the response."""
        seen = len(self._recorder.captured)
        response: httpx.Response = super().send(request, *args, **kwargs)
        new = self._recorder.captured[seen:]
        del self._recorder.captured[:]
        runtime = self.middleware.runtime
        if runtime is None:
            return response
        for captured in new:
            self.profiles.append(ResponseProfile(runtime.build_record(captured)))
        if new:
            response.extensions = {**response.extensions, EXTENSION: self.profiles[-1]}
        return response

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            self.close()

    def close(self) -> None:
        """Close the client, close memprof's files and remove a temporary data dir."""
        try:
            super().close()
        finally:
            self.middleware.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

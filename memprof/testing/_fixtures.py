"""The plugin's fixtures: ``memprof_app`` (override it), ``memprof_settings`` and ``memprof_client``.

Imports of the app-facing parts of memprof happen inside the fixtures, so loading the plugin costs
nothing in test runs that do not use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from memprof.testing._imports import load_app
from memprof.testing._options import option

if TYPE_CHECKING:
    from memprof.settings import MemprofSettings
    from memprof.testing.client import ProfiledClient

CLIENTS = pytest.StashKey[list["ProfiledClient"]]()


@pytest.fixture
def memprof_app(request: pytest.FixtureRequest) -> Any:
    """The ASGI app ``memprof_client`` talks to. Override this fixture, or set the ``memprof_app`` ini
    key / ``--memprof-app`` option to ``MODULE:APP``."""
    spec = option(request.config, "memprof_app")
    if not spec:
        pytest.fail(
            "memprof_client needs an app: override the memprof_app fixture in your conftest.py, or set "
            "memprof_app = MODULE:APP in your pytest configuration (or pass --memprof-app MODULE:APP)",
            pytrace=False,
        )
    try:
        return load_app(str(spec))
    except ValueError as exc:
        pytest.fail(f"memprof_app: {exc}", pytrace=False)


@pytest.fixture
def memprof_settings(tmp_path_factory: pytest.TempPathFactory) -> MemprofSettings:
    """Settings of ``memprof_client``: aggressive mode, every request, records in a temporary dir."""
    from memprof.testing.client import profiled_settings

    return profiled_settings(tmp_path_factory.mktemp("memprof-data"))


@pytest.fixture
def memprof_client(
    request: pytest.FixtureRequest, memprof_app: Any, memprof_settings: MemprofSettings
) -> Iterator[ProfiledClient]:
    """An httpx client (Starlette's TestClient) for ``memprof_app`` under memprof in aggressive mode.

    The app's lifespan runs around the test. ``memprof.testing.profile_of(response)`` (or
    ``memprof_client.last``) gives a request's profile: checkpoints, queries, models, session.
    """
    from memprof.testing.client import ProfiledClient

    with ProfiledClient(memprof_app, settings=memprof_settings) as client:
        request.node.stash.setdefault(CLIENTS, []).append(client)
        yield client

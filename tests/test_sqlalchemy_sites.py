"""Frames that point at the code to change: the loop behind an N+1 (not the shared helper it calls), and
the library frame beside the application's when an installed package issues the SQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from tests.shop import service
from tests.sqla_support import Settings

SHOP = Path(service.__file__).parent


def line_of(path: Path, marker: str) -> int:
    """The line of ``path`` that carries the comment ``marker``."""
    (line,) = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text.endswith(marker)]
    return line


def site(path: Path, marker: str, function: str) -> str:
    return f"tests/shop/{path.name}:{line_of(path, marker)} in {function}"


def by_table(rec: dict[str, Any], table: str) -> dict[str, Any]:
    (found,) = [s for s in rec["queries"]["statements"] if f"FROM {table}" in s["sql"]]
    return found


@pytest.fixture
def shop_db(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "shop.db"
    engine = create_engine(f"sqlite:///{db}")
    service.Base.metadata.create_all(engine)
    with Session(engine) as session:
        service.seed(session)
    engine.dispose()
    yield db


def test_service_loop_over_a_repository_helper_names_the_loop(
    shop_db: Path, make_settings: Settings, samples: Any
) -> None:
    engine = create_engine(f"sqlite:///{shop_db}")
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(service.make_app(sessionmaker(engine)), settings=make_settings())
        with TestClient(app) as client:
            assert client.get("/rename").json() == [f"RECIPE {i}" for i in range(12)]
            assert client.get("/orders").json() == [f"c{i}" for i in range(12)]
            assert client.get("/shop/recipes/r3").json() == "recipe 3"
            assert len(client.get("/rename-while").json()) == 12
    finally:
        uninstrument_sqlalchemy()
        engine.dispose()
    rename, orders, one, pop = samples()
    stat = by_table(rename, "shop_recipe")
    assert stat["count"] == 12 and stat["n_plus_one"]
    # the frame is the shared helper that ran the query; the loop is the service's for line
    assert stat["frame"] == site(SHOP / "repository.py", "# SITE: get_one", "get_one")
    assert stat["loop"] == site(SHOP / "service.py", "# LOOP: rename_all", "rename_all")
    assert stat["library"] is None
    (n1,) = rename["queries"]["n_plus_one"]
    assert n1["loop"] == stat["loop"]
    # lazy loads in a loop: the loop is the app's for line
    lazy = by_table(orders, "shop_customer")
    assert lazy["lazy"] and lazy["count"] == 12
    assert lazy["loop"] == site(SHOP / "service.py", "# LOOP: customer_names", "customer_names")
    # run once: a frame, no loop; a mounted sub-app keeps its template
    single = by_table(one, "shop_recipe")
    assert single["count"] == 1 and single["loop"] is None
    assert single["frame"] == site(SHOP / "repository.py", "# SITE: get_one", "get_one")
    assert one["request"]["route"] == "/shop/recipes/{slug}"
    # a while loop: the first line of its body (where the loop's backward jump lands)
    stat = by_table(pop, "shop_recipe")
    assert stat["loop"] == site(SHOP / "service.py", "# LOOP: rename_while", "rename_while")


def test_async_service_loop_names_the_loop(shop_db: Path, make_settings: Settings, samples: Any) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{shop_db}")
    instrument_sqlalchemy(engine)
    try:
        app = MemprofMiddleware(
            service.make_app(sessionmaker(), async_sessionmaker(engine)), settings=make_settings()
        )

        async def main() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                assert len((await client.get("/arename")).json()) == 12
            await engine.dispose()

        anyio.run(main)
    finally:
        uninstrument_sqlalchemy()
    (rec,) = samples()
    stat = by_table(rec, "shop_recipe")
    assert stat["frame"] == site(SHOP / "repository.py", "# SITE: aget_one", "get_one")
    assert stat["loop"] == site(SHOP / "service.py", "# LOOP: rename_all_async", "rename_all_async")


FAKEADMIN = '''"""An admin-style library: it builds and runs its own queries."""
from sqlalchemy import select
from starlette.responses import JSONResponse
from starlette.routing import Route


def fetch(session, model, ident):
    stmt = select(model).where(model.id == ident)
    return session.scalars(stmt).one()  # LIB: fetch


async def afetch(session, model, ident):
    stmt = select(model).where(model.id == ident)
    return (await session.scalars(stmt)).one()  # LIB: afetch


def routes(amaker, model):
    async def details(request):
        async with amaker() as session:
            obj = await afetch(session, model, int(request.path_params["ident"]))
        return JSONResponse(obj.name)

    return [Route("/{ident}", details)]
'''


@pytest.fixture
def fakeadmin(tmp_path: Path) -> Iterator[Any]:
    """The library, installed where installed packages live (a ``site-packages`` directory)."""
    site_dir = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    (site_dir / "fakeadmin").mkdir(parents=True)
    (site_dir / "fakeadmin" / "__init__.py").write_text(FAKEADMIN)
    sys.path.insert(0, str(site_dir))
    try:
        import fakeadmin  # type: ignore[import-not-found]

        yield fakeadmin
    finally:
        sys.path.remove(str(site_dir))
        sys.modules.pop("fakeadmin", None)


def test_a_library_issuing_the_sql_is_named_beside_the_app_frame(
    shop_db: Path, fakeadmin: Any, make_settings: Settings, samples: Any
) -> None:
    sync = create_engine(f"sqlite:///{shop_db}")
    engine = create_async_engine(f"sqlite+aiosqlite:///{shop_db}")
    instrument_sqlalchemy()
    maker = sessionmaker(sync)

    async def via_library(request: Any) -> Any:
        from starlette.responses import JSONResponse

        with maker() as session:
            recipe = fakeadmin.fetch(session, service.Recipe, 2)  # APP: calls the library
        return JSONResponse(recipe.name)

    app = Starlette(
        routes=[
            Route("/via-library", via_library),
            Mount("/admin/recipe", routes=fakeadmin.routes(async_sessionmaker(engine), service.Recipe)),
        ]
    )
    try:

        async def main() -> None:  # the test driver runs the app in its own stack: it is no app frame
            transport = httpx.ASGITransport(app=MemprofMiddleware(app, settings=make_settings()))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                assert (await client.get("/via-library")).json() == "recipe 1"
                assert (await client.get("/admin/recipe/3")).json() == "recipe 2"
            await engine.dispose()

        anyio.run(main)
    finally:
        uninstrument_sqlalchemy()
        sync.dispose()
    via, admin = samples()
    lib_file = Path(fakeadmin.__file__)
    stat = by_table(via, "shop_recipe")
    assert stat["library"] == f"fakeadmin/__init__.py:{line_of(lib_file, '# LIB: fetch')} in fetch"
    here = Path(__file__)
    assert stat["frame"] == f"tests/{here.name}:{line_of(here, '# APP: calls the library')} in via_library"
    stat = by_table(admin, "shop_recipe")
    assert stat["library"] == f"fakeadmin/__init__.py:{line_of(lib_file, '# LIB: afetch')} in afetch"
    assert stat["frame"] is None  # no application code between the server and the library
    assert admin["request"]["route"] == "/admin/recipe/{ident}"

"""Services that loop over the repository and over lazy relationships, and the app that serves them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from tests.shop.repository import AsyncRepository, Repository


class Base(DeclarativeBase):
    pass


class Recipe(Base):
    __tablename__ = "shop_recipe"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(50))


class Customer(Base):
    __tablename__ = "shop_customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Order(Base):
    __tablename__ = "shop_order"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("shop_customer.id"))
    customer: Mapped[Customer] = relationship(lazy="select")


def seed(session: Any, n: int = 12) -> None:
    session.add_all(Recipe(slug=f"r{i}", name=f"recipe {i}") for i in range(n))
    customers = [Customer(name=f"c{i}") for i in range(n)]
    session.add_all(customers)
    session.add_all(Order(customer=c) for c in customers)
    session.commit()


def rename_all(repo: Repository, slugs: list[str]) -> list[str]:
    names = []
    for slug in slugs:  # LOOP: rename_all
        recipe = repo.get_one(slug)
        names.append(recipe.name.upper())
    return names


def rename_while(repo: Repository, slugs: list[str]) -> list[str]:
    names = []
    while slugs:
        recipe = repo.get_one(slugs.pop())  # LOOP: rename_while
        names.append(recipe.name)
    return names


async def rename_all_async(repo: AsyncRepository, slugs: list[str]) -> list[str]:
    names = []
    for slug in slugs:  # LOOP: rename_all_async
        recipe = await repo.get_one(slug)
        names.append(recipe.name.upper())
    return names


def customer_names(session: Any) -> list[str]:
    orders = session.scalars(select(Order)).all()
    names = []
    for order in orders:  # LOOP: customer_names
        names.append(order.customer.name)
    return names


def make_app(maker: sessionmaker[Any], amaker: async_sessionmaker[Any] | None = None) -> Starlette:
    def rename(request: Request) -> JSONResponse:
        with maker() as session:
            slugs = [f"r{i}" for i in range(12)]
            return JSONResponse(rename_all(Repository(session, Recipe), slugs))

    def rename_pop(request: Request) -> JSONResponse:
        with maker() as session:
            return JSONResponse(rename_while(Repository(session, Recipe), [f"r{i}" for i in range(12)]))

    def orders(request: Request) -> JSONResponse:
        with maker() as session:
            return JSONResponse(customer_names(session))

    async def arename(request: Request) -> JSONResponse:
        assert amaker is not None
        async with amaker() as session:
            slugs = [f"r{i}" for i in range(12)]
            return JSONResponse(await rename_all_async(AsyncRepository(session, Recipe), slugs))

    def one(request: Request) -> JSONResponse:
        with maker() as session:
            recipe = Repository(session, Recipe).get_one(request.path_params["slug"])
            return JSONResponse(recipe.name)

    shop = Starlette(routes=[Route("/recipes/{slug}", one)])
    return Starlette(
        routes=[
            Route("/rename", rename),
            Route("/orders", orders),
            Route("/rename-while", rename_pop),
            Route("/arename", arename),
            Mount("/shop", app=shop),
        ]
    )

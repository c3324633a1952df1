"""Real SQLAlchemy models and FastAPI apps for the SQLAlchemy integration tests and benchmarks.

Every call of :func:`make_schema` maps fresh classes onto tables with a unique prefix, so tests (and
parallel runs against one PostgreSQL database) never collide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Boolean, ForeignKey, Integer, String, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    joinedload,
    mapped_column,
    relationship,
    sessionmaker,
    with_loader_criteria,
)

try:
    from sqlalchemy.ext.asyncio import AsyncAttrs
except ImportError:  # SQLAlchemy < 2.0.13 (make test-oldest): the same in a few lines
    from sqlalchemy.util import greenlet_spawn

    class _Awaitable:
        def __init__(self, obj: Any) -> None:
            self._obj = obj

        def __getattr__(self, name: str) -> Any:
            return greenlet_spawn(getattr, self._obj, name)

    class AsyncAttrs:  # type: ignore[no-redef]
        @property
        def awaitable_attrs(self) -> Any:
            return _Awaitable(self)


SECRET_PASSWORD = "hunter2-Sup3rSecret-pw"
SECRET_TOKEN = "tok-9f8e7d6c5b4a-SECRET"


@dataclass
class Schema:
    """Mapped classes of one test: authors with books and awards, users with secrets."""

    Base: type[DeclarativeBase]
    Author: Any
    Book: Any
    Award: Any
    User: Any
    prefix: str


def make_schema() -> Schema:
    prefix = f"mp{uuid.uuid4().hex[:10]}"

    class Base(AsyncAttrs, DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = f"{prefix}_author"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        books: Mapped[list[Book]] = relationship(back_populates="author", lazy="select")
        awards: Mapped[list[Award]] = relationship(lazy="select")

    class Book(Base):
        __tablename__ = f"{prefix}_book"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        title: Mapped[str] = mapped_column(String(200))
        deleted: Mapped[bool] = mapped_column(Boolean, default=False)
        author_id: Mapped[int] = mapped_column(ForeignKey(f"{prefix}_author.id"))
        author: Mapped[Author] = relationship(back_populates="books")

    class Award(Base):
        __tablename__ = f"{prefix}_award"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        label: Mapped[str] = mapped_column(String(100))
        author_id: Mapped[int] = mapped_column(ForeignKey(f"{prefix}_author.id"))

    class User(Base):
        __tablename__ = f"{prefix}_user"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        email: Mapped[str] = mapped_column(String(200))
        password: Mapped[str] = mapped_column(String(200))
        api_token: Mapped[str] = mapped_column(String(200))

    return Schema(Base, Author, Book, Award, User, prefix)


def seed(session: Session, schema: Schema, authors: int = 12, books: int = 5, awards: int = 4) -> None:
    """Authors, each with ``books`` books (one in five deleted) and ``awards`` awards; one user."""
    for a in range(authors):
        author = schema.Author(name=f"author {a}")
        session.add(author)
        for b in range(books):
            session.add(schema.Book(title=f"book {a}/{b}", deleted=b % 5 == 4, author=author))
        for w in range(awards):
            author.awards.append(schema.Award(label=f"award {a}/{w}"))
    session.add(schema.User(email="ada@example.com", password=SECRET_PASSWORD, api_token=SECRET_TOKEN))
    session.commit()


def criteria_session_class(
    schema: Schema, check_relationship_load: bool, use_lambda: bool = True
) -> type[Session]:
    """A Session class whose ``do_orm_execute`` hook hides deleted books (a "global scope").

    Without ``check_relationship_load`` the hook adds the criteria to lazy loads too, which already
    carry it (propagated from the parent query): the same criteria twice on one statement.
    """

    class ScopedSession(Session):
        pass

    @event.listens_for(ScopedSession, "do_orm_execute")
    def _hide_deleted(state: ORMExecuteState) -> None:
        if not state.is_select or state.is_column_load:
            return
        if check_relationship_load and state.is_relationship_load:
            return
        if use_lambda:
            option = with_loader_criteria(
                schema.Book, lambda cls: cls.deleted.is_(False), include_aliases=True
            )
        else:
            option = with_loader_criteria(schema.Book, schema.Book.deleted.is_(False))
        state.statement = state.statement.options(option)

    return ScopedSession


def sync_app(schema: Schema, factory: sessionmaker[Session]) -> FastAPI:
    """Sync endpoints (run in the threadpool) over a sync Session."""
    app = FastAPI()
    Author, Book, User = schema.Author, schema.Book, schema.User

    @app.get("/n1")
    def n_plus_one() -> dict[str, int]:
        with factory() as session:
            authors = session.scalars(select(Author).order_by(Author.id)).all()
            total = 0
            for author in authors:
                total += len(author.books)  # one lazy SELECT per author
            return {"authors": len(authors), "books": total}

    @app.get("/n1/listcomp")
    def n_plus_one_in_a_list() -> dict[str, int]:
        with factory() as session:
            authors = session.scalars(select(Author).order_by(Author.id)).all()
            counts = [len(author.books) for author in authors]  # a frame of its own on 3.11 only (PEP 709)
            return {"authors": len(authors), "books": sum(counts)}

    @app.get("/n1/genexpr")
    def n_plus_one_in_a_generator() -> dict[str, int]:
        with factory() as session:
            authors = session.scalars(select(Author).order_by(Author.id)).all()
            total = sum(len(author.books) for author in authors)  # a frame of its own on every Python
            return {"authors": len(authors), "books": total}

    @app.get("/joined")
    def joined() -> dict[str, int]:
        with factory() as session:
            stmt = select(Author).options(joinedload(Author.books), joinedload(Author.awards))
            authors = session.scalars(stmt).unique().all()
            return {"authors": len(authors)}

    @app.get("/books")
    def books() -> dict[str, int]:
        with factory() as session:
            return {"books": len(session.scalars(select(Book)).all())}

    @app.get("/books/streamed")
    def books_streamed() -> dict[str, int]:
        with factory() as session:
            result = session.scalars(select(Book).execution_options(yield_per=100))
            return {"books": sum(1 for _ in result)}

    @app.get("/bad-sql")
    def bad_sql() -> dict[str, str]:
        with factory() as session:
            try:
                session.execute(text("SELECT no_such_column FROM no_such_table"))
            except DBAPIError as exc:
                return {"error": type(exc).__name__}
            return {"error": ""}

    @app.get("/users/{user_id}")
    def user(user_id: int) -> dict[str, Any]:
        with factory() as session:
            found = session.get(User, user_id)
            return {"email": found.email if found else None}

    @app.get("/login")
    def login() -> dict[str, bool]:
        with factory() as session:
            stmt = select(User).where(User.password == SECRET_PASSWORD, User.api_token == SECRET_TOKEN)
            return {"ok": session.scalars(stmt).first() is not None}

    @app.post("/write")
    def write() -> dict[str, int]:
        with factory() as session:
            session.add_all([User(email=f"u{i}@example.com", password="x", api_token="y") for i in range(3)])
            session.flush()
            first = session.get(User, 1)
            assert first is not None
            first.email = "changed@example.com"
            victim = session.scalars(select(User).where(User.email == "u2@example.com")).one()
            session.delete(victim)
            session.commit()
            return {"ok": 1}

    return app


def async_app(schema: Schema, factory: async_sessionmaker[AsyncSession]) -> FastAPI:
    """Async endpoints over an AsyncSession (the ORM runs in SQLAlchemy's greenlets)."""
    app = FastAPI()
    Author, Book = schema.Author, schema.Book

    @app.get("/n1")
    async def n_plus_one() -> dict[str, int]:
        async with factory() as session:
            authors = (await session.scalars(select(Author).order_by(Author.id))).all()
            total = 0
            for author in authors:
                total += len(await author.awaitable_attrs.books)  # one lazy SELECT per author
            return {"authors": len(authors), "books": total}

    @app.get("/books")
    async def books() -> dict[str, int]:
        async with factory() as session:
            return {"books": len((await session.scalars(select(Book))).all())}

    @app.get("/books/streamed")
    async def books_streamed() -> dict[str, int]:
        async with factory() as session:
            stream = await session.stream_scalars(select(Book).execution_options(yield_per=7))
            return {"books": len([book async for book in stream])}

    return app

"""The compared endpoint: FastAPI + SQLAlchemy on a SQLite file, the common ``def`` endpoint style.

``GET /items/{item_id}`` loads one row by primary key and ten rows of its group in a fresh Session, and
returns them as JSON. ``GET /health`` answers without the database (readiness polling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine, ForeignKey, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROWS = 200
GROUPS = 20


class Base(DeclarativeBase):
    pass


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(50))
    price: Mapped[int] = mapped_column(Integer)


def make_engine(db_path: Path) -> Engine:
    """A SQLite file engine, seeded once."""
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.get(Item, 1) is None:
            session.add_all(Group(id=g, name=f"group {g}") for g in range(1, GROUPS + 1))
            session.add_all(
                Item(id=i, group_id=i % GROUPS + 1, name=f"item {i}", price=i * 7 % 1000)
                for i in range(1, ROWS + 1)
            )
            session.commit()
    return engine


def make_app(engine: Engine) -> FastAPI:
    """The bare FastAPI app over ``engine``."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, Any]:
        with Session(engine) as session:
            found = session.get(Item, item_id)
            if found is None:
                raise HTTPException(404, "no such item")
            peers = session.scalars(
                select(Item).where(Item.group_id == found.group_id).order_by(Item.id).limit(10)
            ).all()
            return {
                "id": found.id,
                "name": found.name,
                "price": found.price,
                "peers": [{"id": p.id, "name": p.name} for p in peers],
            }

    return app

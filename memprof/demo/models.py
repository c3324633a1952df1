"""The demo's data model (SQLite): customers with orders, addresses and notes, soft-deletable."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class SoftDelete:
    """Rows with ``deleted`` set are hidden by a global loader criteria (the original's "global scope")."""

    deleted: Mapped[bool] = mapped_column(default=False)


class Customer(SoftDelete, Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(120))
    orders: Mapped[list[Order]] = relationship(back_populates="customer")
    addresses: Mapped[list[Address]] = relationship()
    notes: Mapped[list[Note]] = relationship()


class Order(SoftDelete, Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    total_cents: Mapped[int]
    description: Mapped[str] = mapped_column(Text)
    customer: Mapped[Customer] = relationship(back_populates="orders", lazy="select")


class Address(SoftDelete, Base):
    __tablename__ = "addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    line: Mapped[str] = mapped_column(String(200))


class Note(SoftDelete, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    body: Mapped[str] = mapped_column(Text)


def make_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine


def seed(engine: Engine, customers: int = 300, orders_per: int = 40, extras_per: int = 12) -> None:
    """Create the tables and fill them (once): ~12k orders, ~3.6k addresses and notes."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.query(Customer.id).first() is not None:
            return
        for c in range(customers):
            customer = Customer(name=f"customer {c}", email=f"c{c}@example.com")
            customer.orders = [
                Order(total_cents=100 * o + c, description=f"order {o} of {c} " + "x" * 200)
                for o in range(orders_per)
            ]
            customer.addresses = [Address(line=f"{a} Main Street, town {c}") for a in range(extras_per)]
            customer.notes = [Note(body=f"note {n} " + "y" * 300) for n in range(extras_per)]
            session.add(customer)
        session.commit()

"""The demo app: FastAPI + SQLAlchemy (SQLite) with seven planted memory problems
(:mod:`memprof.demo.planted` maps each to the finding that answers it).

1. ``/dashboard`` caches the whole permission list in the session of the ``power`` user, and it grows
   with every visit (session bloat; the original incident).
2. ``/orders`` touches a lazy relationship per row (N+1).
3. ``/customers/{id}`` joinedloads three collections at once (cartesian rows: thousands of rows for
   a few dozen objects).
4. ``/export`` loads every order as an ORM object (a large result set).
5. ``/badge/{n}`` renders through an ``lru_cache(maxsize=None)`` keyed by an unbounded value.
6. ``/admin/*`` loads every row of its tables (a route family far heavier than the rest).
7. The soft-delete scope is added to every SELECT and carried into every lazy load it causes, and
   ``/admin/*`` adds it a second time (loader criteria everywhere).

The database URL comes from ``DEMO_DATABASE_URL``; memprof's settings from ``MEMPROF_*`` variables.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, joinedload, selectinload, with_loader_criteria

import memprof
from memprof import MemprofMiddleware, checkpoint
from memprof.demo.models import Address, Customer, Note, Order, SoftDelete, make_engine, seed
from memprof.demo.sessions import ServerSessionMiddleware

DATABASE_URL = os.environ.get("DEMO_DATABASE_URL", "sqlite:///./memprof-demo/demo.db")
engine = make_engine(DATABASE_URL)
seed(engine)


@event.listens_for(Session, "do_orm_execute")
def _soft_delete_scope(state: ORMExecuteState) -> None:
    """The global scope: hide soft-deleted rows everywhere."""
    if state.is_select and not state.is_column_load and not state.is_relationship_load:
        state.statement = state.statement.options(
            with_loader_criteria(SoftDelete, lambda cls: cls.deleted.is_(False), include_aliases=True)
        )


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


DB = Annotated[Session, Depends(get_session)]


app = FastAPI(title="memprof demo")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/login/{user}")
def login(user: str, request: Request) -> dict[str, str]:
    request.session["user"] = user
    request.session.setdefault("visits", 0)
    return {"user": user}


@app.get("/dashboard")
def dashboard(request: Request) -> dict[str, Any]:
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    if session.get("user") == "power":
        # Planted: the permission cache is appended to on every visit and never trimmed.
        cached = session.setdefault("permissions_cache", [])
        cached.extend(
            f"can:{area}:{action}:{session['visits']}" for area in range(200) for action in range(10)
        )
    return {"visits": session["visits"], "permissions": len(session.get("permissions_cache", []))}


@app.get("/orders")
def list_orders(db: DB) -> list[dict[str, Any]]:
    orders = db.scalars(select(Order).where(Order.id % 40 == 1).order_by(Order.id).limit(60)).all()
    # Planted: order.customer is a lazy relationship, loaded one SELECT per row.
    return [{"id": o.id, "customer": o.customer.name, "total": o.total_cents} for o in orders]


@app.get("/customers/{customer_id}")
def customer_detail(customer_id: int, db: DB) -> dict[str, Any]:
    # Planted: three collections joinedloaded at once multiply the rows (orders x addresses x notes).
    customer = (
        db.scalars(
            select(Customer)
            .where(Customer.id == customer_id)
            .options(joinedload(Customer.orders), joinedload(Customer.addresses), joinedload(Customer.notes))
        )
        .unique()
        .one()
    )
    return {"id": customer.id, "orders": len(customer.orders), "notes": len(customer.notes)}


@app.get("/customers/{customer_id}/summary")
def customer_summary(customer_id: int, db: DB) -> dict[str, Any]:
    customer = db.get(Customer, customer_id)
    return {"id": customer_id, "name": customer.name if customer else None}


@app.get("/export", response_class=PlainTextResponse)
def export(db: DB) -> str:
    with checkpoint("load_orders"):
        # Planted: every order built as an ORM object at once instead of streamed.
        orders = db.scalars(select(Order)).all()
    with checkpoint("render_csv"):
        return "\n".join(f"{o.id},{o.customer_id},{o.total_cents},{o.description}" for o in orders)


@functools.lru_cache(maxsize=None)  # noqa: UP033 - the planted unbounded cache
def render_badge(n: int) -> str:
    return f"<svg data-n='{n}'>" + "<rect/>" * 2000 + "</svg>"


@app.get("/badge/{n}")
def badge(n: int) -> dict[str, int]:
    # Planted: an unbounded cache keyed by a value with no upper bound.
    return {"n": n, "size": len(render_badge(n))}


def _admin_scope(query: Any) -> Any:
    return query.options(
        with_loader_criteria(SoftDelete, lambda cls: cls.deleted.is_(False), include_aliases=True)
    )


@app.get("/admin/customers")
def admin_customers(db: DB) -> dict[str, int]:
    # Planted: the admin panel loads everything, and applies the soft-delete scope a second time.
    customers = db.scalars(
        _admin_scope(select(Customer).options(selectinload(Customer.orders), selectinload(Customer.notes)))
    ).all()
    return {"customers": len(customers), "orders": sum(len(c.orders) for c in customers)}


@app.get("/admin/addresses")
def admin_addresses(db: DB) -> dict[str, int]:
    return {"addresses": len(db.scalars(_admin_scope(select(Address))).all())}


@app.get("/admin/notes")
def admin_notes(db: DB) -> dict[str, int]:
    return {"notes": len(db.scalars(_admin_scope(select(Note))).all())}


def _demo_session(scope: Any) -> tuple[Any, str] | None:
    """Tell memprof which session a request used, so one session's growth can be followed."""
    sid = scope.get("state", {}).get("session_id")
    session = scope.get("session")
    return (session, sid) if sid is not None and session is not None else None


memprof.register_session_provider(_demo_session)
app.add_middleware(ServerSessionMiddleware)
app.add_middleware(
    MemprofMiddleware
)  # outermost (sees the inner middleware's session); instruments SQLAlchemy

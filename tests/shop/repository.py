"""A generic repository, shared by every service (as in many real apps): one query per call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session


class Repository:
    """Fetches one row of ``model`` by slug."""

    def __init__(self, session: Session, model: Any) -> None:
        self.session = session
        self.model = model

    def get_one(self, slug: str) -> Any:
        return self.session.scalars(select(self.model).where(self.model.slug == slug)).one()  # SITE: get_one


class AsyncRepository:
    """The same over an ``AsyncSession``."""

    def __init__(self, session: AsyncSession, model: Any) -> None:
        self.session = session
        self.model = model

    async def get_one(self, slug: str) -> Any:
        query = select(self.model).where(self.model.slug == slug)
        found = await self.session.scalars(query)  # SITE: aget_one
        return found.one()

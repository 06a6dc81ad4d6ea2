"""Leases in the database: at most one holder of a named role at a time (relay leader,
ledger projector), the same code on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, delete, insert, update
from sqlalchemy.exc import IntegrityError

from shared.eventstore.db import Database
from shared.eventstore.tables import leases
from shared.kernel.clock import Clock


class Lease:
    def __init__(
        self, db: Database, name: str, owner: str, ttl_seconds: float, clock: Clock
    ) -> None:
        self.db = db
        self.name = name
        self.owner = owner
        self.ttl = timedelta(seconds=ttl_seconds)
        self.clock = clock

    async def acquire(self) -> bool:
        """Take or renew the lease; False while another owner holds an unexpired one."""
        now = self.clock.now()

        def take(conn: Connection) -> bool:
            result = conn.execute(
                update(leases)
                .where(
                    leases.c.name == self.name,
                    (leases.c.owner == self.owner) | (leases.c.expires_at < now),
                )
                .values(owner=self.owner, expires_at=now + self.ttl)
            )
            if result.rowcount == 1:
                return True
            if conn.execute(leases.select().where(leases.c.name == self.name)).first():
                return False
            conn.execute(
                insert(leases).values(name=self.name, owner=self.owner, expires_at=now + self.ttl)
            )
            return True

        try:
            return await self.db.write(take)
        except IntegrityError:
            return False

    async def release(self) -> None:
        await self.db.write(
            lambda c: c.execute(
                delete(leases).where(leases.c.name == self.name, leases.c.owner == self.owner)
            )
        )

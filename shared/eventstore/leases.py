"""Leases in the database: at most one holder of a named role at a time (relay leader,
ledger projector), the same code on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
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

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """While the block runs, renew the (held) lease a third of the way through each
        term: work longer than one term keeps it, so no other process starts the same work
        beside it (an SLA pass over a go-live import's backlog ran past its lease)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ttl.total_seconds() / 3)
                await self.acquire()

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewing

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
            held = conn.execute(leases.select().where(leases.c.name == self.name)).first()
            if held is not None:
                return conn.dialect.name == "sqlite" and self._take_from_the_dead(conn, held.owner)
            conn.execute(
                insert(leases).values(name=self.name, owner=self.owner, expires_at=now + self.ttl)
            )
            return True

        try:
            return await self.db.write(take)
        except IntegrityError:
            return False

    def _take_from_the_dead(self, conn: Connection, holder: str) -> bool:
        """A holder on this host whose process is gone (killed, crashed) gives the lease up
        at once, not when it expires: a restarted process would wait out the whole term
        (a quarter of an hour for the checkpoints). Only on SQLite, whose file is this
        host's: processes of one database on PostgreSQL may share a host name without
        sharing process ids (containers)."""
        if not _dead_here(holder):
            return False
        result = conn.execute(
            update(leases)
            .where(leases.c.name == self.name, leases.c.owner == holder)
            .values(owner=self.owner, expires_at=self.clock.now() + self.ttl)
        )
        return result.rowcount == 1

    async def release(self) -> None:
        await self.db.write(
            lambda c: c.execute(
                delete(leases).where(leases.c.name == self.name, leases.c.owner == self.owner)
            )
        )


def process_host() -> str:
    """The host name, and the process-id namespace on Linux (``web-1@4026531836``)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}@{namespace}"


def _dead_here(owner: str) -> bool:
    """``owner`` (``relay_owner_id``'s host:pid:suffix) names a process of this host that
    no longer runs. A process id taken again since reads as alive: the lease then expires."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if os.name != "posix" or host != process_host() or not pid_text.isdigit():
        return False  # another host or process-id namespace, or no signal 0 (Windows)
    if int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # someone else's process: alive
        return False
    return False

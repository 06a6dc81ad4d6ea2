"""The read log: who saw which customer's personal data unmasked, when, through which
endpoint. Append-only, written in batches off the request path: responses put entries in
an in-process buffer; a background task writes them in one unit of work per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, insert, select

from shared.eventstore.db import Database
from shared.eventstore.personal.tables import personal_data_reads

log = logging.getLogger(__name__)

# Entries kept while the database is away; past this the oldest go (and are logged).
MAX_BUFFERED = 200_000


@dataclass(frozen=True)
class Read:
    read_at: datetime
    customer_id: str
    actor_subject: str
    actor_role: str
    service: str
    endpoint: str
    ticket_id: str | None = None
    correlation_id: str | None = None


class ReadLog:
    def __init__(self, db: Database, *, flush_seconds: float = 1.0, batch_size: int = 500) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock = asyncio.Lock()

    def record(self, reads: Iterable[Read]) -> None:
        """Buffer entries (never blocks the response); the writer task is started on demand."""
        # A shallow copy: dataclasses.asdict deep-copies every value (a list of 200
        # tickets spent more building its entries than reading the tickets).
        self._buffer.extend(vars(r).copy() for r in reads)
        if not self._buffer:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="read-log")
        if len(self._buffer) >= self.batch_size and self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.flush_seconds)
            wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # kept in the buffer: the next round retries
                log.warning("read log: write failed, %d entries kept: %s", len(self._buffer), exc)

    async def flush(self) -> int:
        """Write what is buffered now (one unit of work a batch); the entries written."""
        async with self._lock:
            written = 0
            while self._buffer:
                batch, self._buffer = (
                    self._buffer[: self.batch_size],
                    self._buffer[self.batch_size :],
                )
                try:
                    await self.db.write(partial(_insert, rows=batch))
                except BaseException:
                    self._buffer[:0] = batch
                    if len(self._buffer) > MAX_BUFFERED:
                        dropped = len(self._buffer) - MAX_BUFFERED
                        del self._buffer[:dropped]
                        log.error("read log: %d oldest entries dropped (database away)", dropped)
                    raise
                written += len(batch)
            return written

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(personal_data_reads), rows)


def read_log(
    conn: Connection,
    *,
    customer_id: str | None = None,
    actor_subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Any]:
    """Entries in the order they were written (``id``), filtered."""
    r = personal_data_reads.c
    query = select(personal_data_reads).where(r.id > after_id).order_by(r.id).limit(limit)
    if customer_id is not None:
        query = query.where(r.customer_id == customer_id)
    if actor_subject is not None:
        query = query.where(r.actor_subject == actor_subject)
    if since is not None:
        query = query.where(r.read_at >= since)
    if until is not None:
        query = query.where(r.read_at < until)
    return list(conn.execute(query).all())

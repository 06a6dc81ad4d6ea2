"""The outbox relay: publishes committed outbox rows to Kafka, in outbox order.

- The outbox holds the positions of events not yet published, written in the events'
  own transaction; a row is deleted only after the broker acknowledged it (acks=all).
- A crash between publishing and deleting re-publishes those events: consumers absorb
  duplicates by (stream id, stream version).
- Rows are selected as "still pending", never as "after the last published", so an event
  that commits late is not skipped.
- Several relays may run; a lease in the database lets one publish at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, delete, func, select, text

from shared.eventstore.db import Database
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import EVENT_COLUMNS, row_to_envelope
from shared.eventstore.metrics import RELAY_PUBLISHED
from shared.eventstore.tables import events, outbox
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope, canonical_json
from shared.kernel.events.registry import topic_for

log = logging.getLogger(__name__)

# Unpublished events in ledger order (columns as row_to_envelope reads them).
_PENDING = text(
    "SELECT "
    + ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
    + " FROM outbox AS o JOIN events AS e ON e.position = o.position"
    " ORDER BY o.position LIMIT :limit"
)


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    envelope: EventEnvelope

    @property
    def position(self) -> int:
        return self.envelope.position

    @property
    def key(self) -> str:
        return self.envelope.stream_id

    @property
    def value(self) -> bytes:
        return canonical_json(self.envelope.to_json_dict()).encode()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        e = self.envelope
        return [
            ("event_type", e.event_type.encode()),
            ("schema_version", str(e.schema_version).encode()),
            ("event_id", str(e.event_id).encode()),
            ("region", (e.region or "").encode()),
            ("stream_type", e.stream_type.encode()),
        ]


class Publisher(Protocol):
    async def publish(self, messages: Sequence[OutboxMessage]) -> list[BaseException | None]:
        """Send all, wait for the broker's acknowledgements; one result per message."""
        ...

    async def close(self) -> None: ...


class KafkaPublisher:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        enable_idempotence: bool,
        request_timeout_ms: int = 10_000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.enable_idempotence = enable_idempotence
        self.request_timeout_ms = request_timeout_ms
        self._producer = None

    async def _get_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                enable_idempotence=self.enable_idempotence,
                request_timeout_ms=self.request_timeout_ms,
                linger_ms=5,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def publish(self, messages: Sequence[OutboxMessage]) -> list[BaseException | None]:
        producer = await self._get_producer()
        futures = []
        for m in messages:
            futures.append(
                await producer.send(m.topic, value=m.value, key=m.key.encode(), headers=m.headers)
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcome: list[BaseException | None] = [
            r if isinstance(r, BaseException) else None for r in results
        ]
        if any(outcome):
            # Start afresh next time: the producer may hold a broken connection.
            await self.close()
        return outcome

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def relay_owner_id() -> str:
    """Unique per holder, readable in the leases table: host, process, random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxRelay:
    LEASE_NAME = "outbox-relay"

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        lease_seconds: float = 10.0,
        clock: Clock | None = None,
        owner: str | None = None,
        topic_prefix: str = "ticketline",
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.batch_size = batch_size
        self.topic_prefix = topic_prefix
        self.clock = clock or SystemClock()
        self.lease = Lease(
            db, self.LEASE_NAME, owner or relay_owner_id(), lease_seconds, self.clock
        )

    def pending(self, conn: Connection, limit: int) -> list[OutboxMessage]:
        rows = conn.execute(_PENDING, {"limit": limit}).all()
        envelopes = [row_to_envelope(r) for r in rows]
        return [OutboxMessage(topic_for(e.stream_type, self.topic_prefix), e) for e in envelopes]

    async def publish_once(self) -> int:
        """One batch: returns how many rows were published (0 when idle or not leader)."""
        if not await self.lease.acquire():
            return 0
        messages = await self.db.read(lambda c: self.pending(c, self.batch_size))
        if not messages:
            return 0
        results = await self.publisher.publish(messages)
        published: list[int] = []
        failed_streams: set[str] = set()
        for message, error in zip(messages, results, strict=True):
            # After a failure in a stream, leave its later rows unmarked too, so the
            # retry re-sends them after the failed one.
            if error is None and message.key not in failed_streams:
                published.append(message.position)
            else:
                failed_streams.add(message.key)
        await self.mark_published(published)
        RELAY_PUBLISHED.inc(len(published))
        if failed_streams:
            first_error = next(e for e in results if e is not None)
            raise RelayError(
                f"{len(messages) - len(published)} rows not published"
            ) from first_error
        return len(published)

    async def mark_published(self, positions: Sequence[int]) -> None:
        """Acknowledged by the broker: no longer pending (one statement a batch)."""
        if not positions:
            return
        done = list(positions)
        await self.db.write(lambda c: c.execute(delete(outbox).where(outbox.c.position.in_(done))))

    async def run(
        self, stop: asyncio.Event, poll_seconds: float = 0.2, backoff_max: float = 5.0
    ) -> None:
        backoff = poll_seconds
        while not stop.is_set():
            try:
                count = await self.publish_once()
                backoff = poll_seconds
            except Exception as exc:  # keep relaying: the outbox holds everything
                log.warning("relay: publish failed, retrying in %.1fs: %s", backoff, exc)
                count = 0
                backoff = min(backoff * 2, backoff_max)
            if count == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        await self.publisher.close()


class RelayError(RuntimeError):
    pass


def outbox_backlog(conn: Connection) -> tuple[int, object]:
    """(unpublished events, when the oldest of them was recorded)."""
    count = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
    oldest = conn.execute(
        select(events.c.recorded_at)
        .join(outbox, outbox.c.position == events.c.position)
        .order_by(outbox.c.position)
        .limit(1)
    ).scalar()
    return int(count), oldest

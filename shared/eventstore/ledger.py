"""The event store: append with optimistic concurrency, read a stream, read all in order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.eventstore.metrics import note_appended
from shared.eventstore.tables import event_sequence, events, outbox
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import (
    GENESIS_HASH,
    Actor,
    CommandContext,
    EventEnvelope,
    EventPayload,
    canonical_json,
)
from shared.kernel.events.registry import topic_for

ANY_VERSION: None = None
NO_STREAM = 0


class ConcurrencyError(Exception):
    """The stream moved on since the caller read it (HTTP 409)."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id}: expected version {expected}, actual {actual if actual is not None else 'newer'}"
        )


@dataclass(frozen=True)
class PendingEvent:
    payload: EventPayload
    occurred_at: datetime | None = None


def row_to_envelope(row: Row[Any]) -> EventEnvelope:
    m = row._mapping
    return EventEnvelope(
        event_id=UUID(m["event_id"]),
        position=m["position"],
        stream_type=m["stream_type"],
        stream_id=m["stream_id"],
        stream_version=m["stream_version"],
        event_type=m["event_type"],
        schema_version=m["schema_version"],
        occurred_at=m["occurred_at"],
        recorded_at=m["recorded_at"],
        actor=Actor(subject=m["actor_subject"], role=m["actor_role"]),
        service=m["service"],
        correlation_id=UUID(m["correlation_id"]),
        causation_id=UUID(m["causation_id"]) if m["causation_id"] else None,
        region=m["region"],
        payload=json.loads(m["payload"]),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


class EventStore:
    """Works inside the caller's transaction so events, outbox rows and whatever else the
    command writes (idempotency record, read-model row) commit or fail together."""

    def __init__(self, clock: Clock | None = None, topic_prefix: str = "ticketline") -> None:
        self.clock = clock or SystemClock()
        self.topic_prefix = topic_prefix

    async def stream_head(self, conn: AsyncConnection, stream_id: str) -> tuple[int, str]:
        """(current version, hash of the last event); (0, genesis) for a new stream."""
        row = (
            await conn.execute(
                select(events.c.stream_version, events.c.hash)
                .where(events.c.stream_id == stream_id)
                .order_by(events.c.stream_version.desc())
                .limit(1)
            )
        ).first()
        return (row.stream_version, row.hash) if row else (0, GENESIS_HASH)

    async def append_to_stream(
        self,
        conn: AsyncConnection,
        stream_id: str,
        expected_version: int | None,
        new_events: Sequence[PendingEvent | EventPayload],
        context: CommandContext,
        *,
        region: str | None = None,
    ) -> list[EventEnvelope]:
        """Append events to one stream; ``expected_version`` None skips the check (the
        unique (stream, version) constraint still rejects a concurrent writer)."""
        if not new_events:
            return []
        pending = [e if isinstance(e, PendingEvent) else PendingEvent(e) for e in new_events]
        stream_types = {p.payload.stream_type for p in pending}
        if len(stream_types) != 1:
            raise ValueError("all events appended together must share one stream type")
        stream_type = stream_types.pop()

        # Taking the next positions locks the sequence row until commit, which orders
        # appenders: positions are gap-free and visible in position order.
        last_position = (
            await conn.execute(
                update(event_sequence)
                .where(event_sequence.c.id == 1)
                .values(last_position=event_sequence.c.last_position + len(pending))
                .returning(event_sequence.c.last_position)
            )
        ).scalar_one()
        first_position = last_position - len(pending) + 1

        version, prev_hash = await self.stream_head(conn, stream_id)
        if expected_version is not None and version != expected_version:
            raise ConcurrencyError(stream_id, expected_version, version)

        recorded_at = self.clock.now()
        envelopes: list[EventEnvelope] = []
        for offset, item in enumerate(pending):
            payload = item.payload
            content: dict[str, Any] = {
                "event_id": uuid4(),
                "position": first_position + offset,
                "stream_type": stream_type,
                "stream_id": stream_id,
                "stream_version": version + offset + 1,
                "event_type": payload.event_type,
                "schema_version": payload.schema_version,
                "occurred_at": item.occurred_at or recorded_at,
                "recorded_at": recorded_at,
                "actor": context.actor,
                "service": context.service,
                "correlation_id": context.correlation_id,
                "causation_id": context.causation_id,
                "region": region,
                "payload": json.loads(canonical_json(payload.model_dump(mode="json"))),
                "prev_hash": prev_hash,
            }
            draft = EventEnvelope(**content, hash="")
            envelope = draft.model_copy(update={"hash": draft.computed_hash()})
            envelopes.append(envelope)
            prev_hash = envelope.hash

        try:
            await conn.execute(insert(events), [_envelope_row(e) for e in envelopes])
        except IntegrityError as exc:
            raise ConcurrencyError(stream_id, version, None) from exc
        note_appended(conn.info, ((e.service, e.event_type) for e in envelopes))
        topic = topic_for(stream_type, self.topic_prefix)
        await conn.execute(
            insert(outbox),
            [
                {
                    "position": e.position,
                    "topic": topic,
                    "message_key": e.stream_id,
                    "created_at": recorded_at,
                }
                for e in envelopes
            ],
        )
        return envelopes

    async def read_stream(
        self,
        conn: AsyncConnection,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
    ) -> list[EventEnvelope]:
        query = (
            select(events)
            .where(events.c.stream_id == stream_id, events.c.stream_version >= from_version)
            .order_by(events.c.stream_version)
        )
        if to_version is not None:
            query = query.where(events.c.stream_version <= to_version)
        if recorded_until is not None:
            query = query.where(events.c.recorded_at <= recorded_until)
        return [row_to_envelope(r) for r in (await conn.execute(query)).all()]

    async def read_all(
        self,
        conn: AsyncConnection,
        *,
        after_position: int = 0,
        limit: int = 1000,
        stream_types: Sequence[str] | None = None,
    ) -> list[EventEnvelope]:
        query = (
            select(events)
            .where(events.c.position > after_position)
            .order_by(events.c.position)
            .limit(limit)
        )
        if stream_types:
            query = query.where(events.c.stream_type.in_(list(stream_types)))
        return [row_to_envelope(r) for r in (await conn.execute(query)).all()]

    async def last_position(self, conn: AsyncConnection) -> int:
        return int(
            (await conn.execute(select(func.coalesce(func.max(events.c.position), 0)))).scalar_one()
        )


def _envelope_row(e: EventEnvelope) -> dict[str, Any]:
    return {
        "position": e.position,
        "event_id": str(e.event_id),
        "stream_type": e.stream_type,
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "occurred_at": e.occurred_at,
        "recorded_at": e.recorded_at,
        "actor_subject": e.actor.subject,
        "actor_role": e.actor.role,
        "service": e.service,
        "correlation_id": str(e.correlation_id),
        "causation_id": str(e.causation_id) if e.causation_id else None,
        "region": e.region,
        "payload": canonical_json(e.payload),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }

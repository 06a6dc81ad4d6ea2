"""Everything a service process needs, built once from the settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.app.config import Settings, get_settings
from shared.eventstore.db import Database
from shared.eventstore.ledger import EventStore
from shared.eventstore.projection import Projection
from shared.eventstore.runner import ProjectionRunner
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope
from shared.readmodels.ticket_state import TicketStateProjection


@dataclass
class Platform:
    settings: Settings
    db: Database
    store: EventStore
    clock: Clock
    runner: ProjectionRunner
    # Updated in the appending transaction, so a service reads its own writes at once.
    # The same projections still run asynchronously (rebuilds, Kafka consumers): the
    # per-stream version bookkeeping makes the second application a no-op.
    inline_projections: Sequence[Projection] = field(
        default_factory=lambda: (TicketStateProjection(),)
    )

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, clock: Clock | None = None
    ) -> Platform:
        settings = settings or get_settings()
        clock = clock or SystemClock()
        db = Database(settings.resolved_database_url)
        store = EventStore(clock=clock, topic_prefix=settings.kafka_topic_prefix)
        return cls(settings, db, store, clock, ProjectionRunner(db, store, clock))

    async def project_inline(self, conn: AsyncConnection, events: Sequence[EventEnvelope]) -> None:
        for projection in self.inline_projections:
            await self.runner.apply(conn, projection, events)

    async def close(self) -> None:
        await self.db.dispose()

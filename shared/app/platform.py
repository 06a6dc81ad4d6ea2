"""Everything a service process needs, built once from the settings (composition root)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from shared.app.config import Settings, get_settings
from shared.app.executor import Executor
from shared.app.personal import check_master_key, personal_data
from shared.app.read_log import ReadLog
from shared.eventstore.db import Database
from shared.eventstore.ledger import EventStore
from shared.eventstore.personal import PersonalData
from shared.eventstore.projection import Projection
from shared.eventstore.runner import ProjectionRunner
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope
from shared.readmodels.ticket_state import TicketStateProjection

# Read models every service keeps in the command's transaction, by stream type: a
# service reads its own writes at once. The same projections still run asynchronously
# (rebuilds, Kafka consumers): the per-stream version bookkeeping makes the second
# application a no-op.
SHARED_INLINE: Mapping[str, tuple[Projection, ...]] = {"ticket": (TicketStateProjection(),)}


@dataclass
class Platform:
    settings: Settings
    db: Database
    store: EventStore
    clock: Clock
    runner: ProjectionRunner
    inline_projections: Sequence[Projection] = field(
        default_factory=lambda: SHARED_INLINE["ticket"]
    )
    _executors: dict[str, Executor] = field(default_factory=dict)
    # Responses that showed personal data unmasked, written in batches (docs/personal-data.md).
    reads: ReadLog | None = None

    def __post_init__(self) -> None:
        if self.reads is None:
            privacy = self.settings.privacy
            self.reads = ReadLog(
                self.db,
                flush_seconds=privacy.read_log_flush_seconds,
                batch_size=privacy.read_log_batch_size,
            )

    @property
    def personal(self) -> PersonalData:
        """Seals personal fields on append, opens them for those who may see them."""
        assert self.store.personal is not None, "a platform's store seals personal data"
        return self.store.personal

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        clock: Clock | None = None,
        *,
        cached_customers: int | None = None,
    ) -> Platform:
        """``cached_customers``: a bound on the customers' keys and memos kept in memory
        (bulk work meeting each customer once: ``ticketline import``)."""
        settings = settings or get_settings()
        clock = clock or SystemClock()
        db = Database(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            read_threads=settings.sqlite_read_threads,
            sqlite_busy_seconds=settings.sqlite_busy_seconds,
        )
        store = EventStore(
            clock=clock,
            topic_prefix=settings.kafka_topic_prefix,
            personal=personal_data(settings, clock, cached_customers=cached_customers),
        )
        runner = ProjectionRunner(db, store, clock, retries=settings.projector_retries)
        return cls(settings, db, store, clock, runner)

    def executor(self, service: str) -> Executor:
        """The command executor of one service: the shared inline read models plus the
        ones the service declares (``INLINE`` in its projections module)."""
        found = self._executors.get(service)
        if found is None:
            from shared.app.registry import inline_projections

            inline = {k: list(v) for k, v in SHARED_INLINE.items()}
            for stream_type, projections in inline_projections(service).items():
                inline.setdefault(stream_type, []).extend(projections)
            found = self._executors[service] = Executor(
                self.store, self.runner, self.clock, {k: tuple(v) for k, v in inline.items()}
            )
        return found

    def project_inline(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        """Apply the shared inline read models to ``events`` (tests and tools that append
        without a service's executor)."""
        for projection in self.inline_projections:
            self.runner.apply(conn, projection, events)

    async def check_personal_data(self) -> None:
        """At start: the configured master key must be this database's (raises
        ``MasterKeyMismatch`` otherwise: refuse to start)."""
        await check_master_key(self.db, self.personal)

    async def close(self) -> None:
        if self.reads is not None:
            await self.reads.close()
        await self.db.dispose()

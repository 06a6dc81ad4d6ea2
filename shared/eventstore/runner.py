"""The projection runner: feeds events from a source into projections, exactly-once in
effect (idempotent apply + checkpoint in the same transaction as the writes).

Two sources of "events in order":
- ``LedgerSource``: the ledger's global order (embedded default, and replays). Its
  checkpoint is the global position, stored in the projection's transaction.
- ``KafkaSource``: a consumer group per projection; offsets are committed only after
  the projection's transaction committed. Per-stream versions (stored with the writes)
  absorb duplicates, and a gap (a later version arriving first) is filled from the ledger.

A batch is one unit of work: one read of the streams' applied versions, the projection's
own few statements, one write of the versions and the checkpoint. Between batches the
writer is free for commands (on SQLite the process has one writer; see db.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection, case, delete, insert, select, text, update

from shared.eventstore.db import Database
from shared.eventstore.ledger import ConcurrencyError, EventStore
from shared.eventstore.metrics import PROJECTION_APPLIED, PROJECTION_DUPLICATES
from shared.eventstore.projection import Projection, driver_sqlite, upsert_rows
from shared.eventstore.tables import projection_checkpoints, projection_stream_versions
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import topic_for

log = logging.getLogger(__name__)


@dataclass
class Batch:
    events: list[EventEnvelope]
    # Global position to store as checkpoint (ledger source); None for Kafka.
    position: int | None = None
    ack: Callable[[], Awaitable[None]] | None = None


class EventSource(Protocol):
    def batches(self, projection: Projection) -> AsyncIterator[Batch]: ...


def read_checkpoint(conn: Connection, name: str) -> int:
    value = conn.execute(
        select(projection_checkpoints.c.position).where(projection_checkpoints.c.projection == name)
    ).scalar()
    return int(value or 0)


class LedgerSource:
    """Reads the ledger after the projection's checkpoint, in pages of ``batch_size``
    events. Stops when caught up unless ``follow`` is set, in which case it polls."""

    def __init__(
        self,
        db: Database,
        store: EventStore,
        *,
        batch_size: int = 500,
        follow: bool = False,
        poll_seconds: float = 0.2,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.batch_size = batch_size
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.stop = stop or asyncio.Event()

    def _page(self, after: int) -> asyncio.Future[list[EventEnvelope]]:
        return asyncio.ensure_future(
            self.db.read(
                lambda c: self.store.read_all(c, after_position=after, limit=self.batch_size)
            )
        )

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        """The next page is read while the caller applies this one."""
        position = await self.db.read(lambda c: read_checkpoint(c, projection.name))
        wanted = set(projection.stream_types)
        pending = self._page(position)
        fresh_read_needed = False
        try:
            while not self.stop.is_set():
                page = await pending
                if not page and not self.follow and fresh_read_needed:
                    # Read ahead before the last batch committed: what that batch appended
                    # (a reactor's events) belongs to this run too.
                    fresh_read_needed = False
                    pending = self._page(position)
                    continue
                if page:
                    fresh_read_needed = True
                    # A page of other stream types still moves the checkpoint on.
                    position = page[-1].position
                    pending = self._page(position)
                    yield Batch([e for e in page if e.stream_type in wanted], position)
                    continue
                if not self.follow:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.poll_seconds)
                pending = self._page(position)
        finally:
            pending.cancel()


class KafkaSource:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str,
        group_prefix: str,
        batch_size: int = 500,
        poll_ms: int = 500,
        idle_stop_after_ms: int | None = None,
        stop: asyncio.Event | None = None,
        group_id: str | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.group_prefix = group_prefix
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.idle_stop_after_ms = idle_stop_after_ms
        self.stop = stop or asyncio.Event()
        self.group_id = group_id

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topics = sorted({topic_for(t, self.topic_prefix) for t in projection.stream_types})
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id or f"{self.group_prefix}.{projection.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
        )
        await consumer.start()
        idle_ms = 0
        try:
            while not self.stop.is_set():
                records = await consumer.getmany(timeout_ms=self.poll_ms)
                if not records:
                    idle_ms += self.poll_ms
                    if self.idle_stop_after_ms is not None and idle_ms >= self.idle_stop_after_ms:
                        return
                    continue
                idle_ms = 0
                events: list[EventEnvelope] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, messages in records.items():
                    for m in messages:
                        events.append(EventEnvelope.model_validate_json(m.value))
                    offsets[tp] = messages[-1].offset + 1

                async def ack(offsets: dict[TopicPartition, int] = offsets) -> None:
                    await consumer.commit(offsets)

                yield Batch(events=events, ack=ack)
        finally:
            await consumer.stop()


@dataclass
class RunStats:
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    gap_filled: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class ProjectionRunner:
    def __init__(self, db: Database, store: EventStore, clock: Clock | None = None) -> None:
        self.db = db
        self.store = store
        self.clock = clock or SystemClock()

    async def run(self, projection: Projection, source: EventSource) -> RunStats:
        stats = RunStats()
        async for batch in source.batches(projection):
            batch_stats = await self._commit_batch(projection, batch)
            stats.applied += batch_stats.applied
            stats.duplicates += batch_stats.duplicates
            stats.gap_filled += batch_stats.gap_filled
            PROJECTION_APPLIED.labels(projection.name).inc(batch_stats.applied)
            PROJECTION_DUPLICATES.labels(projection.name).inc(batch_stats.duplicates)
            if batch.ack is not None:
                await batch.ack()
            stats.batches += 1
        return stats

    async def _commit_batch(
        self, projection: Projection, batch: Batch, attempts: int = 5
    ) -> RunStats:
        """Apply one batch in one transaction. A reactor whose append lost a race to a
        command on the same stream (ConcurrencyError) retries the batch against the new
        state here, instead of failing the projector and making its consumer group
        rebalance."""

        def work(conn: Connection) -> RunStats:
            stats = RunStats()
            self.apply_batch(conn, projection, batch.events, stats)
            if batch.position is not None:
                self.save_checkpoint(conn, projection.name, batch.position)
            elif batch.events:
                # Kafka: the highest global position applied, for the lag metric only
                # (dedupe is per stream version); instances share partitions, so it never
                # moves back.
                self._raise_checkpoint(conn, projection.name, max(e.position for e in batch.events))
            return stats

        for attempt in range(1, attempts + 1):
            try:
                return await self.db.write(work)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def apply(
        self, conn: Connection, projection: Projection, events: Sequence[EventEnvelope]
    ) -> RunStats:
        """Apply events inside the caller's transaction (inline projection)."""
        stats = RunStats()
        self.apply_batch(conn, projection, events, stats)
        return stats

    async def catch_up(self, projection: Projection, batch_size: int = 1000) -> RunStats:
        """Apply everything the ledger holds beyond the checkpoint, then return."""
        return await self.run(projection, LedgerSource(self.db, self.store, batch_size=batch_size))

    async def reset(self, projection: Projection) -> None:
        """Forget everything the projection wrote, so it can be rebuilt from zero."""

        def work(conn: Connection) -> None:
            for table in reversed(projection.tables):
                conn.execute(delete(table))
            conn.execute(
                delete(projection_checkpoints).where(
                    projection_checkpoints.c.projection == projection.name
                )
            )
            conn.execute(
                delete(projection_stream_versions).where(
                    projection_stream_versions.c.projection == projection.name
                )
            )

        await self.db.write(work)

    async def rebuild(
        self, projection: Projection, source: EventSource | None = None, batch_size: int = 5000
    ) -> RunStats:
        await self.reset(projection)
        if source is None:
            return await self.catch_up(projection, batch_size=batch_size)
        return await self.run(projection, source)

    def apply_batch(
        self,
        conn: Connection,
        projection: Projection,
        events: Sequence[EventEnvelope],
        stats: RunStats,
    ) -> None:
        """Apply a batch inside the caller's transaction: skip what the projection already
        has (duplicates), fill gaps from the ledger, record each stream's last applied
        version — read and written once per batch, not per event."""
        wanted = projection.stream_types
        relevant = [e for e in events if e.stream_type in wanted]
        if not relevant:
            return
        stream_ids = {e.stream_id for e in relevant}
        self.lock_streams(conn, projection.name, stream_ids)
        known = self._stream_versions(conn, projection.name, stream_ids)
        versions = dict(known)
        todo: list[EventEnvelope] = []
        for event in relevant:
            last = versions.get(event.stream_id, 0)
            if event.stream_version <= last:
                stats.duplicates += 1
                continue
            if event.stream_version > last + 1:
                missing = self.store.read_stream(
                    conn,
                    event.stream_id,
                    from_version=last + 1,
                    to_version=event.stream_version - 1,
                )
                stats.gap_filled += len(missing)
                todo += missing
            todo.append(event)
            versions[event.stream_id] = event.stream_version
        if todo:
            projection.apply(conn, todo)
            stats.applied += len(todo)
        self._store_versions(conn, projection.name, known, versions)

    @staticmethod
    def _store_versions(
        conn: Connection, name: str, known: dict[str, int], versions: dict[str, int]
    ) -> None:
        rows = [
            {"projection": name, "stream_id": sid, "version": v}
            for sid, v in versions.items()
            if known.get(sid) != v
        ]
        upsert_rows(conn, projection_stream_versions, rows)

    @staticmethod
    def lock_streams(conn: Connection, name: str, stream_ids: set[str]) -> None:
        ProjectionRunner.lock_all(conn, [(name, sid) for sid in stream_ids])

    @staticmethod
    def lock_all(conn: Connection, pairs: Iterable[tuple[str, str]]) -> None:
        """Serialise appliers of the same projection and stream until commit. A command
        applying a projection inline and a projector applying the same stream's earlier
        events would otherwise both see no version yet and both insert (a unique
        violation, a 500 for the command). The later one now waits and then reads the
        committed version, so it skips what is already applied. Locks are taken in one
        order (by key hash), so appliers never wait on each other in a cycle. SQLite has a
        single writer: nothing to do. ``lock_all`` takes the locks of several projections'
        streams in one statement: a unit of work that needs many takes them all at once."""
        if conn.dialect.name != "postgresql":
            return
        keys = sorted({f"projection:{name}:{sid}" for name, sid in pairs})
        if not keys:
            return
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) "
                "AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS ordered"
            ),
            {"keys": keys},
        )

    @staticmethod
    def _stream_versions(conn: Connection, name: str, stream_ids: set[str]) -> dict[str, int]:
        psv = projection_stream_versions
        found: dict[str, int] = {}
        ids = sorted(stream_ids)
        raw = driver_sqlite(conn)
        for start in range(0, len(ids), 500):  # keep IN lists within driver limits
            chunk = ids[start : start + 500]
            if raw is not None:
                rows = raw.execute(
                    "SELECT stream_id, version FROM projection_stream_versions "
                    f"WHERE projection = ? AND stream_id IN ({', '.join('?' * len(chunk))})",
                    [name, *chunk],
                )
                found.update(rows)
                continue
            result = conn.execute(
                select(psv.c.stream_id, psv.c.version).where(
                    psv.c.projection == name, psv.c.stream_id.in_(chunk)
                )
            )
            found.update({r.stream_id: r.version for r in result})
        return found

    def _raise_checkpoint(self, conn: Connection, name: str, position: int) -> None:
        """Upsert keeping the larger position: concurrent instances neither fail on the
        first insert nor move the checkpoint back."""
        from sqlalchemy.dialects import postgresql, sqlite

        upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        pc = projection_checkpoints
        statement = upsert(pc).values(
            projection=name, position=position, updated_at=self.clock.now()
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[pc.c.projection],
                set_={
                    "position": case(
                        (statement.excluded.position > pc.c.position, statement.excluded.position),
                        else_=pc.c.position,
                    ),
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )

    def save_checkpoint(self, conn: Connection, name: str, position: int) -> None:
        now = self.clock.now()
        result = conn.execute(
            update(projection_checkpoints)
            .where(projection_checkpoints.c.projection == name)
            .values(position=position, updated_at=now)
        )
        if result.rowcount == 0:
            conn.execute(
                insert(projection_checkpoints).values(
                    projection=name, position=position, updated_at=now
                )
            )

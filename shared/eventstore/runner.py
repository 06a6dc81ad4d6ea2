"""The projection runner: feeds events from a source into projections, exactly-once in
effect (idempotent apply + checkpoint in the same transaction as the writes).

Two sources of "events in order":
- ``LedgerSource``: the ledger's global order (embedded default, and replays). Its
  checkpoint is the global position, stored in the projection's transaction.
- ``KafkaSource``: a consumer group per projection; offsets are committed only after
  the projection's transaction committed. Per-stream versions (stored with the writes)
  absorb duplicates, and a gap (a later version arriving first) is filled from the ledger.
  Its progress is judged in ledger positions (``progress.LedgerGuard``): what the broker
  does not deliver in time is read from the ledger.

An event that keeps failing (a poison event) is parked after ``retries`` attempts, with
its error, and the projection moves on; the later events of its stream wait behind it
until ``ticketline parked retry|skip`` resolves it (``applied.py``).

A batch is one unit of work: one read of the streams' applied versions, the projection's
own few statements, one write of the versions and the checkpoint. Between batches the
writer is free for commands (on SQLite the process has one writer; see db.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError

from shared.eventstore import applied as _applied
from shared.eventstore.applied import (
    PARKED,
    RETRIED,
    SKIPPED,
    ParkedEvent,
    describe_error,
    mark_resolved,
    note_failed_retry,
    park,
    parked_one,
    store_versions,
    stream_versions,
    unblock,
)
from shared.eventstore.bulk import bulk_gc
from shared.eventstore.db import Database, is_outage, take_locks
from shared.eventstore.ledger import EventStore
from shared.eventstore.metrics import (
    PROJECTION_APPLIED,
    PROJECTION_DUPLICATES,
    PROJECTION_PARKED,
)
from shared.eventstore.progress import LedgerGuard
from shared.eventstore.projection import (
    Projection,
    create_missing_indexes,
    drop_secondary_indexes,
    envelope_fields,
)
from shared.eventstore.tables import (
    events,
    parked_events,
    projection_checkpoints,
    projection_stream_versions,
)
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import topic_for

log = logging.getLogger(__name__)
T = TypeVar("T")
# A projection whose stream types hold under one row in this many of a ledger page reads
# them alone (``EventStore.read_page``'s sparse read): a row found through the index
# costs about twice one read in order.
SPARSE_SHARE = 8


@dataclass
class Batch:
    events: list[EventEnvelope]
    # Global position to store as checkpoint (ledger source); None for Kafka.
    position: int | None = None
    ack: Callable[[], Awaitable[None]] | None = None
    # A ledger page read in the transaction that applies it: (events, position), the
    # position None when there is nothing more to read.
    read: Callable[[Connection], tuple[list[EventEnvelope], int | None]] | None = None

    def load(self, conn: Connection) -> None:
        if self.read is not None:
            self.events, self.position = self.read(conn)


class EventSource(Protocol):
    def batches(self, projection: Projection) -> AsyncIterator[Batch]: ...


def read_checkpoint(conn: Connection, name: str) -> int:
    """The projection's applied position (everything of its stream types up to it)."""
    return _applied.read_checkpoint(conn, name)


class LedgerSource:
    """Reads the ledger after the projection's checkpoint, in pages of ``batch_size``
    events, each page inside the transaction that applies it: on SQLite the writer's own
    connection, as one thread's work (read on a reader thread and applied on the writer,
    a rebuild took ~12 % longer: bench ``sqlite``, replay). A page read that way sees what
    the batch before it appended (a reactor's events). Stops when caught up unless
    ``follow`` is set, in which case it polls."""

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

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        position = await self.db.read(lambda c: read_checkpoint(c, projection.name))
        wanted = frozenset(projection.stream_types)
        fields = envelope_fields(projection)
        sparse = False
        while not self.stop.is_set():
            # A page of other stream types still moves the checkpoint on (to its last row).
            read = partial(
                self.store.read_page,
                after_position=position,
                limit=self.batch_size,
                stream_types=wanted,
                fields=fields,
                sparse=sparse,
            )
            batch = Batch([], read=read)
            yield batch  # the runner loads and applies it
            if batch.position is not None:
                # Positions have no gaps: the share of the rows read that were wanted.
                # Where few are, later pages read those rows alone (through their index).
                sparse = len(batch.events) * SPARSE_SHARE < batch.position - position
                position = batch.position
                continue
            if not self.follow:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.poll_seconds)


class StreamOrderSource:
    """The ledger up to its head in stream order, for the rebuild from zero of a projection
    that recomputes whole streams (``recomputes_whole_streams``: compliance, SLA clocks):
    read by position, each page made it read and recompute every stream it touched —
    most of them again on the next page, where a ticket's events lie far apart. In
    stream order each stream is recomputed once. The checkpoint, the head, is saved with
    the last batch; the pages are read in the transactions applying them, like
    ``LedgerSource``'s."""

    def __init__(self, db: Database, store: EventStore, *, batch_size: int = 5000) -> None:
        self.db = db
        self.store = store
        self.batch_size = batch_size

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        # Positions commit in order: every event up to the head is there to read.
        head = await self.db.read(self.store.last_position)
        after = ("", 0)
        while head:
            read = partial(self._page, after=after, head=head, projection=projection)
            batch = Batch([], read=read)
            yield batch
            if batch.position is not None:  # the last page
                return
            last = batch.events[-1]
            after = (last.stream_id, last.stream_version)

    def _page(
        self, conn: Connection, *, after: tuple[str, int], head: int, projection: Projection
    ) -> tuple[list[EventEnvelope], int | None]:
        found = self.store.read_in_stream_order(
            conn,
            after=after,
            head=head,
            limit=self.batch_size,
            stream_types=projection.stream_types,
            fields=envelope_fields(projection),
        )
        return found, head if len(found) < self.batch_size else None


class KafkaSource:
    """A consumer group per projection; offsets are committed after the projection's
    transaction. With a ``guard`` (the projector's case) the projection's progress is
    judged in ledger positions: the guard keeps its applied position and fills from the
    ledger what the broker does not deliver, and a consumer found past its log's end (a
    broker that came back without its log) starts that partition again from the
    beginning."""

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
        guard: LedgerGuard | None = None,
        metadata_max_age_ms: int = 5000,
        commit_seconds: float = 5.0,
        stop_seconds: float = 5.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.group_prefix = group_prefix
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.idle_stop_after_ms = idle_stop_after_ms
        self.stop = stop or asyncio.Event()
        self.group_id = group_id
        self.guard = guard
        self.metadata_max_age_ms = metadata_max_age_ms
        self.commit_seconds = commit_seconds
        # How long a consumer's stop may wait for the broker: a projector stopped while the
        # broker is away exits within its grace period (aiokafka waits ~40 s on it).
        self.stop_seconds = stop_seconds

    def _consumer(self, projection: Projection) -> Any:
        from aiokafka import AIOKafkaConsumer

        topics = sorted({topic_for(t, self.topic_prefix) for t in projection.stream_types})
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id or f"{self.group_prefix}.{projection.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            # A topic re-created after a broker lost it is seen within seconds.
            metadata_max_age_ms=self.metadata_max_age_ms,
        )

    async def _fill(self, projection: Projection) -> Batch | None:
        """What the ledger has that the broker did not deliver in time (a guard's check)."""
        if self.guard is None or not self.guard.due():
            return None
        fill = await self.guard.check(projection)
        return Batch(events=fill) if fill else None

    async def _connect(self, projection: Projection) -> AsyncGenerator[Any, None]:
        """The started consumer (the last item). While it starts — the broker may be away,
        or slow to answer — the ledger's fill batches; a refused start is tried again after
        a pause (filling meanwhile). Without a guard (a replay), a refusal is the caller's
        error. Nothing when ``stop`` is set first."""
        attempt = 0
        while not self.stop.is_set():
            consumer = self._consumer(projection)
            starting = asyncio.ensure_future(consumer.start())
            try:
                while not starting.done() and not self.stop.is_set():
                    await asyncio.wait({starting}, timeout=min(self.poll_ms / 1000, 0.5))
                    if not starting.done() and (batch := await self._fill(projection)):
                        yield batch
            except BaseException:  # cancelled, or the caller stopped iterating
                await _abandon(starting, consumer, self.stop_seconds)
                raise
            if not starting.done():  # asked to stop meanwhile
                await _abandon(starting, consumer, self.stop_seconds)
                return
            error = starting.exception()
            if error is None:
                if attempt:
                    log.info("projection %s: the broker answers again", projection.name)
                yield consumer
                return
            await _stop_consumer(consumer, self.stop_seconds)
            if self.guard is None:
                raise error
            if attempt == 0:
                log.warning(
                    "projection %s: the broker cannot be reached (%s); applying from the "
                    "ledger until it can",
                    projection.name,
                    describe_error(error),
                )
            attempt += 1
            pause_until = time.monotonic() + min(1.0 * attempt, 5.0)
            while time.monotonic() < pause_until and not self.stop.is_set():
                if batch := await self._fill(projection):
                    yield batch
                await asyncio.sleep(min(self.poll_ms / 1000, 0.5))

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        consumer: Any = None
        connecting = self._connect(projection)
        try:
            async for item in connecting:
                if isinstance(item, Batch):
                    yield item
                else:
                    consumer = item
        finally:  # a caller that stops early abandons the start now, not at collection
            await connecting.aclose()
        if consumer is None:  # stopped before the broker answered
            return
        idle_ms = 0
        past_end: dict[Any, tuple[int, float]] = {}  # found past their log's end: since when
        try:
            while not self.stop.is_set():
                records = await consumer.getmany(timeout_ms=self.poll_ms)
                if self.guard is not None and self.guard.due():
                    fill = await self.guard.check(projection)
                    # Only then: some brokers report a partition's end short of its last
                    # offsets, which would look like a truncated log at any other time.
                    if self.guard.overdue and await log_truncated(consumer, seen=past_end):
                        self.guard.urgent = True
                    if fill:
                        yield Batch(events=fill)
                if not records:
                    idle_ms += self.poll_ms
                    if self.idle_stop_after_ms is not None and idle_ms >= self.idle_stop_after_ms:
                        if self.guard is not None:
                            await self.guard.check(projection)
                        return
                    continue
                idle_ms = 0
                yield _kafka_batch(consumer, records, self.commit_seconds)
        finally:
            await _stop_consumer(consumer, self.stop_seconds)


class KafkaLogSnapshot:
    """A projection's topics as they stand when the read starts, from their beginning to
    the end offsets taken then (a replay), and one poll more: no consumer group — nothing
    to join, wait for or commit — and the read ends at the log's end however busy the
    topics are."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str,
        batch_size: int = 500,
        poll_ms: int = 500,
        stop_seconds: float = 5.0,
        stuck_seconds: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.stop_seconds = stop_seconds
        self.stuck_seconds = stuck_seconds

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            max_poll_records=self.batch_size,
        )
        await consumer.start()
        try:
            existing = await consumer.topics()
            topics = {topic_for(t, self.topic_prefix) for t in projection.stream_types}
            partitions = [
                TopicPartition(topic, p)
                for topic in sorted(topics & existing)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends: dict[Any, int] = await consumer.end_offsets(partitions)
            idle = 0.0
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                records = await consumer.getmany(timeout_ms=self.poll_ms)
                if records:
                    idle = 0.0
                    yield _kafka_batch(consumer, records, ack=False)
                    continue
                idle += self.poll_ms / 1000
                if idle >= self.stuck_seconds:  # ends it cannot reach (a compacted gap)
                    log.warning("replay from Kafka: no message for %.0f s short of the ends", idle)
                    return
            # One poll more, then done (a busy topic is never chased): some brokers report
            # an end short of the messages they hold (the test broker among them).
            if records := await consumer.getmany(timeout_ms=self.poll_ms):
                yield _kafka_batch(consumer, records, ack=False)
        finally:
            await _stop_consumer(consumer, self.stop_seconds)


async def _abandon(starting: asyncio.Future[Any], consumer: Any, seconds: float) -> None:
    starting.cancel()
    with contextlib.suppress(BaseException):
        await starting
    await _stop_consumer(consumer, seconds)


async def _stop_consumer(consumer: Any, seconds: float) -> None:
    """Leave the group within ``seconds``: a broker that does not answer would hold the
    process past its grace period (aiokafka waits ~40 s on it)."""
    try:
        await asyncio.wait_for(consumer.stop(), seconds)
    except TimeoutError:
        log.warning(
            "a Kafka consumer did not leave its group within %g s (the broker did not "
            "answer): its partitions move to the others after the session timeout",
            seconds,
        )
    except Exception as exc:
        log.warning("a Kafka consumer did not stop cleanly: %s", describe_error(exc))


def _kafka_batch(
    consumer: Any, records: dict[Any, list[Any]], commit_seconds: float = 5.0, *, ack: bool = True
) -> Batch:
    events: list[EventEnvelope] = []
    offsets: dict[Any, int] = {}
    for tp, messages in records.items():
        for m in messages:
            events.append(EventEnvelope.model_validate_json(m.value))
        offsets[tp] = messages[-1].offset + 1
    if not ack:  # no group to commit to
        return Batch(events=events)
    return Batch(events=events, ack=partial(commit_offsets, consumer, offsets, commit_seconds))


async def commit_offsets(consumer: Any, offsets: dict[Any, int], seconds: float) -> None:
    """The offsets, committed within ``seconds`` or not at all. A broker away makes the
    commit wait for as long as it is away, and the projector (and with it the ledger's
    fill) with it; a rebalance fails it. The events are applied either way: uncommitted
    offsets only mean they come again, and are skipped as applied."""
    try:
        await asyncio.wait_for(consumer.commit(offsets), seconds)
    except Exception as exc:
        log.warning(
            "offsets of %d partition(s) not committed (%s); their events are applied and "
            "will be skipped if they come again",
            len(offsets),
            "timed out" if isinstance(exc, TimeoutError) else describe_error(exc),
        )


# How long a position must stay past a partition's end before the log counts as lost:
# longer than a group's rebalance after a member died (its session runs out first).
LOST_LOG_SECONDS = 30.0


async def log_truncated(
    consumer: Any,
    seconds: float = 5.0,
    seen: dict[Any, tuple[int, float]] | None = None,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> bool:
    """True (and those partitions start again from their beginning) when the consumer's
    position is past the end of a partition's log: the broker lost messages, and what it
    holds now would otherwise be skipped. ``seen``: kept between calls (partition →
    position, since when), a partition counts only once it has stayed past the end at the
    same position for ``LOST_LOG_SECONDS`` — a lost log stays lost, while a broker
    answering short for a while does not: after a stall or a rebalance (black-box runs saw
    partitions read again from 0 every second for a minute, and a projector restarted
    after a kill -9 reread whole partitions while its group rebalanced; nothing lost)."""
    try:
        assigned = list(consumer.assignment())
        if not assigned:
            return False
        # Positions first, then the ends: a log's end only grows, while the consumer's
        # position moves on as it fetches — read the other way round, messages that
        # arrived between the two reads looked like a lost log end (a false alarm under
        # load, and a whole partition read again).
        positions = {tp: await asyncio.wait_for(consumer.position(tp), seconds) for tp in assigned}
        ends = await asyncio.wait_for(consumer.end_offsets(assigned), seconds)
        past = {tp: positions[tp] for tp in assigned if positions[tp] > ends.get(tp, positions[tp])}
    except Exception as exc:  # the broker is away: nothing to say yet
        log.debug("log end check failed: %s", exc)
        return False
    if seen is None:
        behind = list(past)
    else:
        now = monotonic()
        since = {
            tp: seen[tp][1] if seen.get(tp, (None,))[0] == at else now for tp, at in past.items()
        }
        behind = [tp for tp in past if now - since[tp] >= LOST_LOG_SECONDS]
        seen.clear()
        seen.update({tp: (past[tp], since[tp]) for tp in past if tp not in behind})
    if behind:
        log.warning(
            "consumer past the log end of %s: the broker lost messages; reading those "
            "partitions from the beginning and filling from the ledger",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in behind),
        )
        await consumer.seek_to_beginning(*behind)
    return bool(behind)


@dataclass
class RunStats:
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    gap_filled: int = 0
    # Events not applied: parked (poison), or waiting behind a parked event of their stream.
    parked: int = 0
    held: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, other: RunStats) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.gap_filled += other.gap_filled
        self.parked += other.parked
        self.held += other.held


@dataclass(frozen=True)
class Resolution:
    """The outcome of ``ticketline parked retry|skip``."""

    parked: ParkedEvent
    ok: bool
    error: str | None = None
    held: RunStats = field(default_factory=RunStats)


class ParkedNotOpen(LookupError):
    """No parked event with that id, or it was already resolved."""


class ProjectionRunner:
    def __init__(
        self,
        db: Database,
        store: EventStore,
        clock: Clock | None = None,
        *,
        retries: int = 5,
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock or SystemClock()
        # Attempts of a failing batch (and then of each of its events) before an event is
        # parked. A database outage never counts: the projector stops and retries later.
        self.retries = max(1, retries)

    async def run(self, projection: Projection, source: EventSource) -> RunStats:
        stats = RunStats()
        async for batch in source.batches(projection):
            batch_stats = await self._commit_batch(projection, batch)
            stats.add(batch_stats)
            PROJECTION_APPLIED.labels(projection.name).inc(batch_stats.applied)
            PROJECTION_DUPLICATES.labels(projection.name).inc(batch_stats.duplicates)
            if batch.ack is not None:
                await batch.ack()
            if batch.events or batch.position is not None:  # not the read that found none
                stats.batches += 1
        return stats

    async def _attempts(self, work: Callable[[Connection], T]) -> T:
        """``work`` in a write transaction, tried up to ``retries`` times. A reactor whose
        append lost a race to a command on the same stream (ConcurrencyError) runs again
        against the new state here."""
        for attempt in range(1, self.retries + 1):
            try:
                return await self.db.write(work)
            except Exception as exc:
                if is_outage(exc) or attempt == self.retries:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    async def _commit_batch(self, projection: Projection, batch: Batch) -> RunStats:
        """Apply one batch in one transaction. A batch that keeps failing is applied one
        event at a time, and the events that still fail are parked."""

        def work(conn: Connection) -> RunStats:
            stats = RunStats()
            batch.load(conn)
            self.apply_batch(conn, projection, batch.events, stats)
            if batch.position is not None:
                self.save_checkpoint(conn, projection.name, batch.position)
            return stats

        try:
            return await self._attempts(work)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.warning(
                "projection %s: a batch of %d events failed %d times (%s); applying its "
                "events one at a time",
                projection.name,
                len(batch.events),
                self.retries,
                describe_error(exc),
            )
        if batch.read is not None:  # read alone: an unreadable page raises here
            await self.db.read(batch.load)
        stats = await self.isolate(projection, batch.events)
        if batch.position is not None:
            position = batch.position
            await self.db.write(lambda c: self.save_checkpoint(c, projection.name, position))
        return stats

    async def isolate(self, projection: Projection, events: Sequence[EventEnvelope]) -> RunStats:
        """Each event alone (after the ones its stream still misses), in order: one that
        keeps failing is parked, and the later events of its stream wait behind it."""
        stats = RunStats()
        wanted = projection.stream_types
        for event in (e for e in events if e.stream_type in wanted):
            missing = await self.db.read(
                partial(self._missing_before, name=projection.name, event=event)
            )
            for one in [*missing, event]:
                await self._apply_or_park(projection, one, stats)
        return stats

    def _missing_before(self, conn: Connection, name: str, event: EventEnvelope) -> list[Any]:
        applied = stream_versions(conn, name, [event.stream_id])
        if event.stream_id in applied.parked:
            return []
        last = applied.versions.get(event.stream_id, 0)
        if event.stream_version <= last + 1:
            return []
        return list(
            self.store.read_stream(
                conn, event.stream_id, from_version=last + 1, to_version=event.stream_version - 1
            )
        )

    async def _apply_or_park(
        self, projection: Projection, event: EventEnvelope, stats: RunStats
    ) -> None:
        def work(conn: Connection) -> RunStats:
            one = RunStats()
            self.apply_batch(conn, projection, [event], one)
            return one

        try:
            stats.add(await self._attempts(work))
            return
        except Exception as exc:
            if is_outage(exc):  # also a unit that kept losing races (DatabaseUnavailable)
                raise
            error = exc
        now = self.clock.now()

        def record(conn: Connection) -> None:
            self.lock_streams(conn, projection.name, {event.stream_id})
            park(conn, projection.name, event, error, self.retries, now)

        await self.db.write(record)
        stats.parked += 1
        PROJECTION_PARKED.labels(projection.name).inc()
        log.error(
            "projection %s parked event %s (%s %s v%d, position %d) after %d attempts: %s",
            projection.name,
            event.event_id,
            event.event_type,
            event.stream_id,
            event.stream_version,
            event.position,
            self.retries,
            describe_error(error),
        )

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

    def rebuild_source(self, projection: Projection, batch_size: int = 5000) -> EventSource:
        """Where a rebuild from zero reads the ledger: in stream order for a projection that
        recomputes whole streams, else by position."""
        if getattr(projection, "recomputes_whole_streams", False):
            return StreamOrderSource(self.db, self.store, batch_size=batch_size)
        return LedgerSource(self.db, self.store, batch_size=batch_size)

    async def reset(self, projection: Projection) -> None:
        """Forget everything the projection wrote, so it can be rebuilt from zero."""

        def work(conn: Connection) -> None:
            for table in reversed(projection.tables):
                conn.execute(delete(table))
            for table in (projection_checkpoints, projection_stream_versions, parked_events):
                conn.execute(delete(table).where(table.c.projection == projection.name))

        await self.db.write(work)

    async def rebuild(
        self,
        projection: Projection,
        source: EventSource | None = None,
        batch_size: int = 5000,
        *,
        in_database: bool | None = None,
    ) -> RunStats:
        """From the first event. The tables' secondary indexes are dropped meanwhile and
        built once at the end (a ``ticket_state`` rebuild: ~15 % faster); queries on the
        tables scan until then. A process killed midway leaves them to the next rebuild
        (``ticketline replay`` rebuilds in a scratch database, never the live tables).
        From the ledger (no ``source``, or ``in_database`` with a source that reads the
        ledger, used only if the database cannot fold it) a projection that folds in the
        database does (``_fold_in_database``)."""
        await self.db.write(lambda c: drop_secondary_indexes(c, projection.tables))
        try:
            await self.reset(projection)  # deleting every row costs less without them too
            if (source is None if in_database is None else in_database) and (
                folded := await self._fold_in_database(projection)
            ):
                return folded
            with bulk_gc():  # ~15% less CPU on a replay (bench.rebuild_scale)
                return await self.run(
                    projection, source or self.rebuild_source(projection, batch_size)
                )
        finally:
            await self.db.write(lambda c: create_missing_indexes(c, projection.tables))

    async def _fold_in_database(self, projection: Projection) -> RunStats | None:
        """A projection that folds the whole ledger in SQL (``fold_in_database(conn,
        head)``: its tables and each stream's applied version up to ``head``;
        ``ticket_state``) does, with the checkpoint, in one transaction. None if it cannot
        (its statement fails on an event it cannot fold): the caller then folds event by
        event, which upcasts and parks what it cannot apply."""
        fold = getattr(projection, "fold_in_database", None)
        if fold is None:
            return None
        wanted = events.c.stream_type.in_(list(projection.stream_types))

        def work(conn: Connection) -> RunStats:
            # Positions commit in order, so everything up to the head is there to read.
            head = conn.execute(select(func.max(events.c.position))).scalar() or 0
            fold(conn, head)
            if head:
                self.save_checkpoint(conn, projection.name, head)
            ours = wanted & (events.c.position <= head)
            applied = conn.execute(select(func.count()).where(ours)).scalar_one()
            return RunStats(batches=1, applied=applied)

        try:
            stats = await self.db.write(work)
        except (IntegrityError, DataError) as exc:  # a value a column refuses: the same
            log.info("projection %s: folding event by event: %s", projection.name, exc.orig)
            return None
        PROJECTION_APPLIED.labels(projection.name).inc(stats.applied)
        return stats

    async def resolve_parked(
        self, projection: Projection, parked_id: int, action: str, by: str
    ) -> Resolution:
        """``retry``: apply the parked event now (it stays parked, with the new error, if
        it fails again); ``skip``: count it as applied without applying it. Either way
        the events of its stream that waited behind it are then applied in order (one
        that fails is parked in its turn)."""
        if action not in ("retry", "skip"):
            raise ValueError("action is retry or skip")
        now = self.clock.now()

        def work(conn: Connection) -> ParkedEvent:
            found = parked_one(conn, parked_id)
            if found is None or found.status != PARKED or found.projection != projection.name:
                raise ParkedNotOpen(parked_id)
            self.lock_streams(conn, projection.name, {found.stream_id})
            if action == "skip":
                unblock(conn, projection.name, found.stream_id, found.stream_version)
            else:
                unblock(conn, projection.name, found.stream_id)
                (event,) = self.store.read_stream(
                    conn,
                    found.stream_id,
                    from_version=found.stream_version,
                    to_version=found.stream_version,
                )
                self.apply_batch(conn, projection, [event], RunStats())
            mark_resolved(conn, parked_id, RETRIED if action == "retry" else SKIPPED, by, now)
            return found

        try:
            found = await self.db.write(work)
        except ParkedNotOpen:
            raise
        except Exception as exc:
            if is_outage(exc):
                raise
            error = exc
        else:
            waiting = await self.db.read(
                lambda c: self.store.read_stream(
                    c, found.stream_id, from_version=found.stream_version + 1
                )
            )
            return Resolution(found, ok=True, held=await self.isolate(projection, waiting))
        await self.db.write(lambda c: note_failed_retry(c, parked_id, error))
        current = await self.db.read(lambda c: parked_one(c, parked_id))
        assert current is not None
        return Resolution(current, ok=False, error=describe_error(error))

    def apply_batch(
        self,
        conn: Connection,
        projection: Projection,
        events: Sequence[EventEnvelope],
        stats: RunStats,
    ) -> None:
        """Apply a batch inside the caller's transaction: skip what the projection already
        has (duplicates) and what waits behind a parked event, fill gaps from the ledger,
        record each stream's last applied version — read and written once per batch, not
        per event."""
        wanted = projection.stream_types
        relevant = [e for e in events if e.stream_type in wanted]
        if not relevant:
            return
        stream_ids = {e.stream_id for e in relevant}
        self.lock_streams(conn, projection.name, stream_ids)
        applied = stream_versions(conn, projection.name, stream_ids)
        versions = dict(applied.versions)
        todo: list[EventEnvelope] = []
        for event in relevant:
            if event.stream_id in applied.parked:
                stats.held += 1
                continue
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
        store_versions(conn, projection.name, applied.versions, versions)

    @staticmethod
    def lock_streams(conn: Connection, name: str, stream_ids: set[str]) -> None:
        ProjectionRunner.lock_all(conn, [(name, sid) for sid in stream_ids])

    @staticmethod
    def lock_all(conn: Connection, pairs: Iterable[tuple[str, str]]) -> None:
        """Serialise appliers of the same projection and stream until commit. A command
        applying a projection inline and a projector applying the same stream's earlier
        events would otherwise both see no version yet and both insert (a unique
        violation, a 500 for the command). The later one now waits and then reads the
        committed version, so it skips what is already applied. ``lock_all`` takes the
        locks of several projections' streams in one statement (``take_locks``: one
        order, before the position counter): a unit of work that needs many takes them
        all at once."""
        take_locks(conn, [f"projection:{name}:{sid}" for name, sid in pairs])

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

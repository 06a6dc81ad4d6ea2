"""The outbox relay: publishes committed outbox rows to Kafka, in outbox order.

- The outbox holds the positions of events not yet published, written in the events'
  own transaction; a row is deleted only after the broker acknowledged it (acks=all).
- A crash between publishing and deleting re-publishes those events: consumers absorb
  duplicates by (stream id, stream version).
- Rows are selected as "still pending", never as "after the last published", so an event
  that commits late is not skipped.
- Several relays may run; a lease in the database lets one publish at a time.
- A broker that lost messages is noticed: the relay keeps, per topic partition, the
  offset and event id of the highest message acknowledged (``relay_offsets``). Another
  message (or none) at that offset when the relay looks (every ``check_seconds``, and
  before publishing again after a later acknowledgement came at or below it — a truncated
  log, or only a relay that lost the lease during a stall landing its last batch) means
  the log was truncated or rebuilt; the relay then re-queues the topic's whole history
  into the outbox and publishes it again (consumers skip what they already have). It also looks before
  publishing on taking the lease and after a failed publish or look, so that rows written
  during an outage follow the history queued again on a log that came back empty (each
  stream stays in version order). ``ticketline relay republish --from-position N`` does
  the same by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, delete, func, select, text

from shared.eventstore.db import Database
from shared.eventstore.kafka import TopicWatch
from shared.eventstore.leases import Lease, process_host
from shared.eventstore.ledger import EVENT_COLUMNS, row_to_envelope
from shared.eventstore.metrics import RELAY_PUBLISHED, RELAY_REQUEUED
from shared.eventstore.projection import delete_where_in, upsert_rows
from shared.eventstore.tables import events, outbox, relay_offsets
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import TOPIC_FAMILY_BY_STREAM_TYPE, topic_for

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
        return self.envelope.to_json_text().encode()

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


@dataclass(frozen=True)
class Acked:
    """Where the broker put an acknowledged message (and which event it is)."""

    topic: str
    partition: int
    offset: int
    event_id: str = ""


Delivery = BaseException | Acked | None  # None: acknowledged, offset unknown


class Publisher(Protocol):
    async def publish(self, messages: Sequence[OutboxMessage]) -> list[Delivery]:
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

    async def publish(self, messages: Sequence[OutboxMessage]) -> list[Delivery]:
        producer = await self._get_producer()
        futures = []
        for m in messages:
            futures.append(
                await producer.send(m.topic, value=m.value, key=m.key.encode(), headers=m.headers)
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcome: list[Delivery] = [
            r
            if isinstance(r, BaseException)
            else Acked(r.topic, r.partition, r.offset, str(m.envelope.event_id))
            for m, r in zip(messages, results, strict=True)
        ]
        if any(isinstance(r, BaseException) for r in outcome):
            # Start afresh next time: the producer may hold a broken connection.
            await self.close()
        return outcome

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def relay_owner_id() -> str:
    """Unique per holder, readable in the leases table: host (with its process-id
    namespace where there is one: two containers may share a host name, not process ids),
    process, random suffix."""
    return f"{process_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        watch: TopicWatch | None = None,
        check_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.batch_size = batch_size
        self.topic_prefix = topic_prefix
        self.clock = clock or SystemClock()
        self.lease = Lease(
            db, self.LEASE_NAME, owner or relay_owner_id(), lease_seconds, self.clock
        )
        self.watch = watch
        self.check_seconds = check_seconds
        self.leader = False
        self._next_check = 0.0
        # Look at the topics before publishing again: on taking the lease, and after a
        # failed publish (the broker may come back without its log — rows published to
        # the new log before the history is queued again would put a stream out of order).
        self._look_first = True

    def pending(self, conn: Connection, limit: int) -> list[OutboxMessage]:
        rows = conn.execute(_PENDING, {"limit": limit}).all()
        envelopes = [row_to_envelope(r) for r in rows]
        return [OutboxMessage(topic_for(e.stream_type, self.topic_prefix), e) for e in envelopes]

    async def publish_once(self) -> int:
        """One batch: returns how many rows were published (0 when idle or not leader)."""
        leader, self.leader = self.leader, await self.lease.acquire()
        if not self.leader:
            return 0
        if not leader:
            self._look_first = True
        if self._look_first and self.watch is not None:
            await self.check_topics()  # raises while the broker is away: published nothing
            self._next_check = asyncio.get_running_loop().time() + self.check_seconds
        self._look_first = False
        messages = await self.db.read(lambda c: self.pending(c, self.batch_size))
        if not messages:
            return 0
        try:
            results = await self.publisher.publish(messages)
        except BaseException:
            self._look_first = True
            raise
        published: list[int] = []
        acked: list[Acked] = []
        failed_streams: set[str] = set()
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, Acked):
                acked.append(result)
            # After a failure in a stream, leave its later rows unmarked too, so the
            # retry re-sends them after the failed one.
            if not isinstance(result, BaseException) and message.key not in failed_streams:
                published.append(message.position)
            else:
                failed_streams.add(message.key)
        await self.mark_published(published, acked)
        RELAY_PUBLISHED.inc(len(published))
        if failed_streams:
            self._look_first = True
            first_error = next(e for e in results if isinstance(e, BaseException))
            raise RelayError(
                f"{len(messages) - len(published)} rows not published"
            ) from first_error
        return len(published)

    async def mark_published(self, positions: Sequence[int], acked: Sequence[Acked] = ()) -> None:
        """Acknowledged by the broker: no longer pending (one statement a batch). An
        acknowledged offset at or below one acknowledged before may be a truncated log, or
        only another relay's publish landing in between (a lease that moved while the
        broker stalled): the relay looks at the log before publishing again, and the look
        decides (``check_topics``). Without a watch to look with, the history is queued
        again at once."""
        if not positions and not acked:
            return
        done = list(positions)
        now = self.clock.now()
        watched = self.watch is not None

        def work(conn: Connection) -> tuple[set[str], dict[str, int]]:
            delete_where_in(conn, outbox, "position", done)
            suspect = record_offsets(conn, acked, now)
            if watched or not suspect:
                return suspect, {}
            for topic in suspect:  # its offsets belong to the lost log: the new log's instead
                conn.execute(delete(relay_offsets).where(relay_offsets.c.topic == topic))
            record_offsets(conn, acked, now)
            return suspect, {
                t: requeue(conn, self.topic_prefix, topics={t}) for t in sorted(suspect)
            }

        suspect, requeued = await self.db.write(work)
        if watched and suspect:
            log.info(
                "relay: an acknowledged offset below the last one on %s: looking at the "
                "log before publishing again",
                ", ".join(sorted(suspect)),
            )
            self._look_first = True
        _report_requeued(requeued, "an acknowledged offset below the last one")

    async def check_topics(self) -> dict[str, int]:
        """Re-create missing topics; re-queue the history of any whose partitions no
        longer hold, at the offset the relay last had acknowledged, the message it
        published there. Returns the events re-queued per topic."""
        if self.watch is None:
            return {}
        await self.watch.ensure()
        stored = await self.db.read(acknowledged)
        if not stored:
            return {}
        found = await self.watch.event_ids_at({k: offset for k, (offset, _) in stored.items()})
        lost = {t for (t, p), (_, event_id) in stored.items() if found.get((t, p)) != event_id}

        def work(conn: Connection) -> dict[str, int]:
            for topic in lost:
                # Written again by the next acknowledgements, on the new log.
                conn.execute(delete(relay_offsets).where(relay_offsets.c.topic == topic))
            return {t: requeue(conn, self.topic_prefix, topics={t}) for t in sorted(lost)}

        requeued = await self.db.write(work)
        _report_requeued(requeued, "the message last acknowledged is gone from its log")
        return requeued

    async def _check_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.watch is None or not self.leader or now < self._next_check:
            return
        self._next_check = now + self.check_seconds
        try:
            await self.check_topics()
        except Exception as exc:  # the broker may be away: the next check tries again
            log.warning("relay: topic check failed: %s", exc)
            self._look_first = True  # it may come back empty: look before publishing

    async def run(
        self, stop: asyncio.Event, poll_seconds: float = 0.2, backoff_max: float = 5.0
    ) -> None:
        backoff = poll_seconds
        while not stop.is_set():
            try:
                count = await self.publish_once()
                backoff = poll_seconds
            except Exception as exc:  # keep relaying: the outbox holds everything
                log.warning(
                    "relay: publish failed, retrying in %.1fs: %s (%r)%s",
                    backoff,
                    exc,
                    exc.__cause__,
                    _idempotence_hint(self.publisher, exc),
                )
                count = 0
                backoff = min(backoff * 2, backoff_max)
            await self._check_if_due()
            if count == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        await self.publisher.close()


def _idempotence_hint(publisher: Publisher, exc: BaseException) -> str:
    """aiokafka says only "UnknownError" when a broker refuses the idempotent producer: the
    setting that may be the cause, named beside that error (not beside a broker away)."""
    said = f"{exc} {exc.__cause__}"
    if getattr(publisher, "enable_idempotence", False) and "UnknownError" in said:
        return _IDEMPOTENCE_HINT
    return ""


_IDEMPOTENCE_HINT = (
    "; the producer is idempotent (TICKETLINE_KAFKA_ENABLE_IDEMPOTENCE=true): a broker "
    "that refuses InitProducerId needs it false (docs/operations.md)"
)


def _report_requeued(requeued: dict[str, int], why: str) -> None:
    for topic, count in requeued.items():
        RELAY_REQUEUED.labels(topic).inc(count)
        log.warning(
            "relay: topic %s lost messages (%s); re-queued its history: %d events",
            topic,
            why,
            count,
        )


def acknowledged(conn: Connection) -> dict[tuple[str, int], tuple[int, str]]:
    """(topic, partition) → (offset, event id) of the last message acknowledged there."""
    ro = relay_offsets
    rows = conn.execute(select(ro.c.topic, ro.c.partition, ro.c.acked_offset, ro.c.event_id))
    return {(r.topic, r.partition): (r.acked_offset, r.event_id) for r in rows}


def record_offsets(conn: Connection, acked: Sequence[Acked], now: object) -> set[str]:
    """Store, per partition, the highest of these acknowledgements (never lowering what is
    stored: another relay may have published past them meanwhile); returns the topics
    where one is at or below the offset stored before — offsets only grow in a log that
    keeps its messages, so the log may have been truncated or rebuilt."""
    if not acked:
        return set()
    last: dict[tuple[str, int], Acked] = {}
    lowest: dict[tuple[str, int], int] = {}
    for a in acked:
        key = (a.topic, a.partition)
        if key not in last or a.offset > last[key].offset:
            last[key] = a
        lowest[key] = min(lowest.get(key, a.offset), a.offset)
    stored = {k: v for k, v in acknowledged(conn).items() if k in last}
    suspect = {t for (t, p), low in lowest.items() if (t, p) in stored and low <= stored[(t, p)][0]}
    rows = [
        {
            "topic": a.topic,
            "partition": a.partition,
            "acked_offset": a.offset,
            "event_id": a.event_id,
            "updated_at": now,
        }
        for key, a in last.items()
        if key not in stored or a.offset > stored[key][0]
    ]
    upsert_rows(conn, relay_offsets, rows)
    return suspect


def stream_types_of(prefix: str, topics: set[str] | None) -> list[str] | None:
    if topics is None:
        return None
    return sorted(st for st in TOPIC_FAMILY_BY_STREAM_TYPE if topic_for(st, prefix) in topics)


def requeue(
    conn: Connection, prefix: str, *, topics: set[str] | None = None, from_position: int = 1
) -> int:
    """Queue the ledger's events again (those of ``topics``, or all) from a position on:
    the relay publishes them again, in position order, before what is newer. Rows
    already pending stay as they are. Returns the rows queued."""
    types = stream_types_of(prefix, topics)
    if types == []:
        return 0
    where = "position >= :from_position"
    params: dict[str, object] = {"from_position": from_position}
    if types is not None:
        names = [f":t{i}" for i in range(len(types))]
        where += f" AND stream_type IN ({', '.join(names)})"
        params |= {f"t{i}": t for i, t in enumerate(types)}
    select_sql = f"SELECT position FROM events WHERE {where}"
    if conn.dialect.name == "postgresql":
        sql = f"INSERT INTO outbox (position) {select_sql} ON CONFLICT DO NOTHING"
    else:
        sql = f"INSERT OR IGNORE INTO outbox (position) {select_sql}"
    return int(conn.execute(text(sql), params).rowcount or 0)


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

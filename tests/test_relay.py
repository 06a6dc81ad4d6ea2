"""Outbox relay and Kafka projection source against the real Kafka-protocol test broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.eventstore.db import Database
from shared.eventstore.kafka import ensure_topics, event_topics
from shared.eventstore.ledger import NO_STREAM, EventStore
from shared.eventstore.outbox import KafkaPublisher, OutboxRelay, RelayError
from shared.eventstore.runner import KafkaSource, ProjectionRunner, commit_offsets
from shared.eventstore.tables import outbox
from shared.readmodels.ticket_state import TicketStateProjection, ticket_state
from tests.support.broker import TestBroker
from tests.support.factories import context, diagnosed, new_ticket_id, received
from tests.support.kafka import assert_per_stream_order, consume_all

pytestmark = pytest.mark.kafka
TOPIC = "ticketline.tickets"


def make_relay(db: Database, broker: TestBroker, owner: str = "relay-a") -> OutboxRelay:
    publisher = KafkaPublisher(
        broker.bootstrap_servers, enable_idempotence=False, request_timeout_ms=3000
    )
    return OutboxRelay(db, publisher, batch_size=7, owner=owner)


async def write_tickets(db: Database, store: EventStore, count: int) -> list[str]:
    ids = []
    for n in range(count):
        tid = new_ticket_id()
        ids.append(tid)
        await db.write(
            lambda c, tid=tid, n=n: store.append_to_stream(
                c, tid, NO_STREAM, [received(n)], context(), region="east"
            )
        )
    for tid in ids:  # interleave streams so batches mix tickets
        await db.write(
            lambda c, tid=tid: store.append_to_stream(
                c, tid, 1, [diagnosed()], context(), region="east"
            )
        )
    return ids


async def drain(relay: OutboxRelay) -> int:
    total = 0
    while count := await relay.publish_once():
        total += count
    return total


async def unpublished(db: Database) -> int:
    query = select(func.count()).select_from(outbox)
    return int(await db.read(lambda c: c.execute(query).scalar_one()))


async def test_relay_publishes_everything_in_per_ticket_order(
    db: Database, store: EventStore, broker: TestBroker
) -> None:
    await ensure_topics(broker.bootstrap_servers, event_topics("ticketline"), partitions=3)
    ids = await write_tickets(db, store, 10)
    relay = make_relay(db, broker)
    try:
        assert await drain(relay) == 20
    finally:
        await relay.publisher.close()
    assert await unpublished(db) == 0
    messages = await consume_all(broker.bootstrap_servers, TOPIC)
    assert len(messages) == 20
    assert {m["_key"] for m in messages} == set(ids)
    assert all(m["_key"] == m["stream_id"] for m in messages)
    assert {m["_headers"]["region"] for m in messages} == {"east"}
    assert_per_stream_order(messages)


async def test_only_one_relay_publishes_at_a_time(
    db: Database, store: EventStore, broker: TestBroker
) -> None:
    await write_tickets(db, store, 6)  # 12 rows: more than one batch of 7
    leader, standby = make_relay(db, broker, "relay-a"), make_relay(db, broker, "relay-b")
    try:
        assert await leader.publish_once() > 0
        assert await standby.publish_once() == 0  # the lease is held
        await leader.lease.release()
        assert await standby.publish_once() > 0  # takes over once released
    finally:
        await leader.publisher.close()
        await standby.publisher.close()


async def test_relay_killed_between_publish_and_mark_loses_nothing(
    db: Database, store: EventStore, broker: TestBroker
) -> None:
    ids = await write_tickets(db, store, 4)

    class CrashingRelay(OutboxRelay):
        async def mark_published(self, positions, acked=()):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt("killed after the broker acknowledged")

    crashing = CrashingRelay(
        db, KafkaPublisher(broker.bootstrap_servers, enable_idempotence=False), batch_size=5
    )
    with pytest.raises(KeyboardInterrupt):
        await crashing.publish_once()
    await crashing.publisher.close()
    assert await unpublished(db) == 8  # nothing was marked

    # A new relay (after the dead one's lease expired) publishes everything again.
    await crashing.lease.release()
    relay = make_relay(db, broker, "relay-b")
    try:
        assert await drain(relay) == 8
    finally:
        await relay.publisher.close()
    messages = await consume_all(broker.bootstrap_servers, TOPIC)
    assert len(messages) == 8 + 5  # the first batch arrived twice

    # A projection fed from Kafka absorbs the duplicates.
    runner = ProjectionRunner(db, store)
    source = KafkaSource(
        broker.bootstrap_servers,
        topic_prefix="ticketline",
        group_prefix="test",
        idle_stop_after_ms=1500,
    )
    stats = await runner.run(TicketStateProjection(), source)
    assert stats.applied == 8
    assert stats.duplicates == 5
    query = select(ticket_state.c.ticket_id, ticket_state.c.status)
    rows = await db.read(lambda c: c.execute(query).all())
    assert sorted(rows) == sorted((tid, "diagnosed") for tid in ids)


async def test_a_broker_refusing_the_idempotent_producer_is_named_in_the_relays_log(
    db: Database, store: EventStore, broker: TestBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The test broker refuses InitProducerId, as some Kafka-protocol brokers do: aiokafka
    says only "UnknownError", so the relay's warning names the setting
    (docs/operations.md)."""
    await ensure_topics(broker.bootstrap_servers, event_topics("ticketline"), partitions=1)
    await write_tickets(db, store, 1)
    publisher = KafkaPublisher(
        broker.bootstrap_servers, enable_idempotence=True, request_timeout_ms=3000
    )
    relay = OutboxRelay(db, publisher, owner="relay-a")
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop, poll_seconds=0.2, backoff_max=0.5))
    try:
        for _ in range(150):  # 30 s at most
            if "publish failed" in caplog.text:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert "TICKETLINE_KAFKA_ENABLE_IDEMPOTENCE=true" in caplog.text
    assert await unpublished(db) == 2  # everything waits in the outbox


async def test_broker_down_outbox_buffers_then_everything_arrives(
    db: Database, store: EventStore
) -> None:
    broker = TestBroker()  # not started: the broker is down
    relay = make_relay(db, broker)
    ids = await write_tickets(db, store, 5)
    with pytest.raises((RelayError, OSError, Exception)):
        await asyncio.wait_for(relay.publish_once(), 30)
    assert await unpublished(db) == 10  # everything waits in the outbox
    more = await write_tickets(db, store, 2)  # writes keep working while it is down

    broker.start()
    try:
        assert await drain(relay) == 14
        messages = await consume_all(broker.bootstrap_servers, TOPIC)
    finally:
        await relay.publisher.close()
        broker.stop()
    assert {m["stream_id"] for m in messages} == set(ids + more)
    assert len(messages) == 14
    assert_per_stream_order(messages)


async def test_kafka_projection_equals_ledger_projection(
    db: Database, store: EventStore, broker: TestBroker
) -> None:
    await write_tickets(db, store, 6)
    relay = make_relay(db, broker)
    try:
        await drain(relay)
    finally:
        await relay.publisher.close()
    runner = ProjectionRunner(db, store)
    projection = TicketStateProjection()
    await runner.catch_up(projection)
    everything = select(ticket_state).order_by("ticket_id")
    from_ledger = await db.read(lambda c: c.execute(everything).all())
    await runner.reset(projection)
    source = KafkaSource(
        broker.bootstrap_servers,
        topic_prefix="ticketline",
        group_prefix="t2",
        idle_stop_after_ms=1500,
    )
    await runner.run(projection, source)
    from_kafka = await db.read(lambda c: c.execute(everything).all())
    assert from_kafka == from_ledger and len(from_kafka) == 6


async def test_an_offset_commit_never_waits_on_a_broker_that_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The offset commit waits for as long as the broker is away (and a rebalance fails
    it): the projector would stop with it, the ledger's fill too. It gives up after its
    time: the batch is applied, and uncommitted offsets only bring the events again."""

    class AwayBroker:
        async def commit(self, offsets: dict[Any, int]) -> None:
            await asyncio.Event().wait()  # never answered

    class Rebalanced:
        async def commit(self, offsets: dict[Any, int]) -> None:
            raise RuntimeError("the group rebalanced")

    for consumer in (AwayBroker(), Rebalanced()):
        await asyncio.wait_for(commit_offsets(consumer, {("topic", 0): 42}, 0.05), 5)
    assert "not committed (timed out)" in caplog.text
    assert "the group rebalanced" in caplog.text


async def test_a_projector_started_while_the_broker_is_away_applies_from_the_ledger(
    db: Database, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Started with the broker away, the consumer cannot join its group: the projector
    applies what the ledger holds meanwhile (the guard's fill), says so once, retries the
    broker, and stops promptly when asked (no crash loop, no wait on the broker)."""
    from shared.eventstore.progress import LedgerGuard

    ids = await write_tickets(db, store, 3)
    away = TestBroker()  # never started: nothing listens on its port
    stop = asyncio.Event()
    source = KafkaSource(
        away.bootstrap_servers,
        topic_prefix="ticketline",
        group_prefix="away",
        stop=stop,
        guard=LedgerGuard(db, store, grace_seconds=0.5, check_seconds=0.2),
    )
    runner = ProjectionRunner(db, store)
    running = asyncio.create_task(runner.run(TicketStateProjection(), source))
    query = select(ticket_state.c.ticket_id, ticket_state.c.status)
    rows: list[Any] = []
    for _ in range(150):
        rows = await db.read(lambda c: c.execute(query).all())
        if len(rows) == 3:
            break
        await asyncio.sleep(0.1)
    stop.set()
    stats = await asyncio.wait_for(running, 15)
    assert sorted(rows) == sorted((tid, "diagnosed") for tid in ids)
    assert stats.applied == 6
    assert caplog.text.count("the broker cannot be reached") == 1


def test_replicated_topics_the_relay_creates_need_all_but_one_replica() -> None:
    """What the relay creates matches deploy/'s topics: acks=all then means two of three."""
    from shared.eventstore.kafka import topic_configs

    assert topic_configs(3)["min.insync.replicas"] == "2"
    assert topic_configs(3)["retention.ms"] == "-1"
    assert "min.insync.replicas" not in topic_configs(1)  # one broker: nothing to require

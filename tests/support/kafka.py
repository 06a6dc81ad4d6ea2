"""Publishing the outbox to the test broker, and reading back what reached it."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.eventstore.db import Database
from shared.eventstore.outbox import KafkaPublisher, OutboxRelay


async def consume_all(bootstrap_servers: str, topic: str, *, idle_ms: int = 1500) -> list[dict]:
    """Every message on the topic, in partition order: at least up to each partition's end
    as the broker reports it on entry (a slow group join never reads as an empty topic),
    then on until the topic goes quiet."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions) if partitions else {}
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                return out
            for messages in batch.values():
                for m in messages:
                    body = json.loads(m.value)
                    body["_headers"] = {k: v.decode() for k, v in m.headers}
                    body["_key"] = m.key.decode()
                    out.append(body)
    finally:
        await consumer.stop()


def assert_per_stream_order(messages: list[dict]) -> None:
    """Within each stream, versions arrive ascending (duplicates allowed)."""
    seen: dict[str, int] = {}
    for m in messages:
        last = seen.get(m["stream_id"], 0)
        assert m["stream_version"] >= last, (
            f"stream {m['stream_id']}: {m['stream_version']} after {last}"
        )
        seen[m["stream_id"]] = m["stream_version"]


async def relay_all(db: Database, bootstrap_servers: str, **options: Any) -> None:
    """Publish the whole outbox (``options``: the relay's, e.g. ``owner``, ``batch_size``);
    the test broker refuses the idempotent producer."""
    relay = OutboxRelay(db, KafkaPublisher(bootstrap_servers, enable_idempotence=False), **options)
    try:
        while await relay.publish_once():
            pass
    finally:
        await relay.publisher.close()

"""Reading back what reached the test broker."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaConsumer


async def consume_all(bootstrap_servers: str, topic: str, *, idle_ms: int = 1500) -> list[dict]:
    """Every message on the topic, in partition order, until the topic goes quiet."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
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

"""Kafka topics of the platform and their creation (idempotent)."""

from __future__ import annotations

import contextlib

from shared.kernel.events.registry import TOPIC_FAMILY_BY_STREAM_TYPE


def event_topics(prefix: str) -> list[str]:
    return sorted({f"{prefix}.{family}" for family in TOPIC_FAMILY_BY_STREAM_TYPE.values()})


async def ensure_topics(
    bootstrap_servers: str, topics: list[str], *, partitions: int = 6, replication: int = 1
) -> None:
    """Create missing topics. Event topics keep everything: the broker's copy is a
    replayable log, the ledger stays the source of truth."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=partitions,
                        replication_factor=replication,
                        topic_configs={"retention.ms": "-1", "cleanup.policy": "delete"},
                    )
                    for t in missing
                ]
            )
    finally:
        await admin.close()

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


class TopicWatch:
    """What the broker holds of the event topics, for the relay: re-creates missing
    topics (a broker that came back empty) and reads each partition's end offset."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        *,
        partitions: int = 6,
        replication: int = 1,
        request_timeout_ms: int = 5000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.partitions = partitions
        self.replication = replication
        self.request_timeout_ms = request_timeout_ms

    async def ensure(self) -> None:
        await ensure_topics(
            self.bootstrap_servers,
            self.topics,
            partitions=self.partitions,
            replication=self.replication,
        )

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) → the offset after the partition's last message."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=self.request_timeout_ms,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            await consumer.topics()  # load the metadata
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return {}
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

"""Kafka topics of the platform and their creation (idempotent)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from shared.kernel.events.registry import TOPIC_FAMILY_BY_STREAM_TYPE


def event_topics(prefix: str) -> list[str]:
    return sorted({f"{prefix}.{family}" for family in TOPIC_FAMILY_BY_STREAM_TYPE.values()})


def topic_configs(replication: int) -> dict[str, str]:
    """Event topics keep everything (the broker's copy is a replayable log, the ledger stays
    the source of truth). Replicated, an acknowledged write (``acks=all``) is on all but one
    replica, so one broker may fail without losing it or stopping the relay."""
    configs = {"retention.ms": "-1", "cleanup.policy": "delete"}
    if replication > 1:
        configs["min.insync.replicas"] = str(max(1, replication - 1))
    return configs


async def ensure_topics(
    bootstrap_servers: str, topics: list[str], *, partitions: int = 6, replication: int = 1
) -> None:
    """Create missing topics (``topic_configs``)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
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
                        topic_configs=topic_configs(replication),
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

    async def event_ids_at(
        self, wanted: dict[tuple[str, int], int], seconds: float = 3.0
    ) -> dict[tuple[str, int], str | None]:
        """(topic, partition) → the ``event_id`` header of the message at that offset, or
        None when the partition's log does not reach it (or the partition is gone)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=self.request_timeout_ms,
            enable_auto_commit=False,
            auto_offset_reset="none",
        )
        found: dict[tuple[str, int], str | None] = {key: None for key in wanted}
        try:
            await consumer.start()
            await consumer.topics()  # load the metadata
            present = [
                TopicPartition(t, p)
                for (t, p) in wanted
                if p in (consumer.partitions_for_topic(t) or ())
            ]
            if present:
                consumer.assign(present)
                for tp in present:
                    consumer.seek(tp, wanted[(tp.topic, tp.partition)])
                await self._read_first(consumer, wanted, found, seconds)
        finally:
            await consumer.stop()
        return found

    @staticmethod
    async def _read_first(
        consumer: Any,
        wanted: dict[tuple[str, int], int],
        found: dict[tuple[str, int], str | None],
        seconds: float,
    ) -> None:
        """Read each assigned partition's first message (at the offset it was sought
        to); a partition whose log ends before it, or begins after it, is left None."""
        from aiokafka.errors import OffsetOutOfRangeError

        loop = asyncio.get_running_loop()
        waiting = {(tp.topic, tp.partition): tp for tp in consumer.assignment()}
        deadline = loop.time() + seconds
        while waiting and loop.time() < deadline:
            try:
                batch = await consumer.getmany(*waiting.values(), timeout_ms=200)
            except OffsetOutOfRangeError as exc:  # those logs do not reach the offset
                for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else ():
                    waiting.pop((tp.topic, tp.partition), None)
                    consumer.pause(tp)
                continue
            for tp, messages in batch.items():
                key = (tp.topic, tp.partition)
                if key not in waiting or not messages:
                    continue
                first = messages[0]
                if first.offset == wanted[key]:
                    found[key] = dict(first.headers or []).get("event_id", b"").decode()
                del waiting[key]  # read (another offset first: the log was rewritten)
                consumer.pause(tp)
        if not waiting:
            return
        # Not read in time: a log that ends at or before the offset lost the message; one
        # that holds it was only slow (a leader election, a broker coming back) — say so
        # rather than call it lost (that would queue the topic's whole history again).
        ends = await consumer.end_offsets(list(waiting.values()))
        slow = [key for key, tp in waiting.items() if ends.get(tp, 0) > wanted[key]]
        if slow:
            raise TimeoutError(f"partitions not read within {seconds:g} s: {sorted(slow)}")

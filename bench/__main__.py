"""Backbone benchmarks — figures, not pass/fail.

    make bench                  # full run (100k events for the replay figure)
    python -m bench --events 20000

Prints appends/s to the ledger on SQLite and PostgreSQL (one stream, many streams), relay
throughput to the Kafka-protocol test broker, and projection replay rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from shared.app.config import Settings
from shared.app.platform import Platform
from shared.eventstore.ledger import NO_STREAM
from shared.eventstore.migrations import upgrade
from shared.eventstore.outbox import KafkaPublisher, OutboxRelay
from shared.kernel.events.envelope import Actor, CommandContext
from shared.kernel.events.tickets import TicketReceived
from shared.readmodels.ticket_state import TicketStateProjection
from tests.support.broker import TestBroker
from tests.support.factories import diagnosed, received
from tests.support.postgres import PostgresCluster

CONTEXT = CommandContext(actor=Actor(subject="bench", role="system"), service="bench")
_numbers = itertools.count(1)


def new_ticket() -> TicketReceived:
    return received(next(_numbers))


def report(label: str, count: int, seconds: float, unit: str = "events") -> None:
    rate = count / seconds if seconds else float("inf")
    print(
        f"  {label:<46} {count:>8} {unit} in {seconds:7.2f} s = {rate:10.0f} {unit}/s", flush=True
    )


async def timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = await fn()
    return count, time.perf_counter() - started


async def append_single_stream(platform: Platform, count: int) -> int:
    stream = str(uuid.uuid4())
    async with platform.db.transaction() as conn:
        await platform.store.append_to_stream(conn, stream, NO_STREAM, [new_ticket()], CONTEXT)
    for version in range(1, count):
        async with platform.db.transaction() as conn:
            await platform.store.append_to_stream(conn, stream, version, [diagnosed()], CONTEXT)
    return count


async def append_many_streams(platform: Platform, count: int, writers: int = 8) -> int:
    """``writers`` concurrent tasks, each opening new tickets: one event per transaction."""

    async def writer(n: int) -> None:
        for _ in range(n):
            async with platform.db.transaction() as conn:
                await platform.store.append_to_stream(
                    conn, str(uuid.uuid4()), NO_STREAM, [new_ticket()], CONTEXT, region="east"
                )

    per = count // writers
    await asyncio.gather(*(writer(per) for _ in range(writers)))
    return per * writers


async def seed_bulk(platform: Platform, count: int, per_stream: int = 10) -> None:
    """Fast seeding for the replay figure: ten events a ticket, one transaction a ticket."""
    for _ in range(count // per_stream):
        async with platform.db.transaction() as conn:
            await platform.store.append_to_stream(
                conn,
                str(uuid.uuid4()),
                NO_STREAM,
                [new_ticket()] + [diagnosed()] * (per_stream - 1),
                CONTEXT,
                region="east",
            )


async def bench_backend(
    name: str, url: str, appends: int, replay_events: int, broker: TestBroker | None
) -> None:
    upgrade(url)
    platform = Platform.from_settings(Settings(database_url=url))
    print(f"{name}:", flush=True)
    try:
        report(
            "append, one stream (1 event/transaction)",
            *await timed(lambda: append_single_stream(platform, appends)),
        )
        report(
            "append, many streams (8 writers)",
            *await timed(lambda: append_many_streams(platform, appends)),
        )
        if broker is not None:
            relay = OutboxRelay(
                platform.db,
                KafkaPublisher(broker.bootstrap_servers, enable_idempotence=False),
                batch_size=1000,
            )

            async def drain() -> int:
                total = 0
                while n := await relay.publish_once():
                    total += n
                return total

            report("relay outbox → broker (acks=all)", *await timed(drain))
            await relay.publisher.close()
        await seed_bulk(platform, replay_events)
        projection = TicketStateProjection()

        async def replay() -> int:
            return (await platform.runner.rebuild(projection)).applied

        report("projection replay (ticket_state, from ledger)", *await timed(replay))
    finally:
        await platform.close()


async def main(args: argparse.Namespace) -> None:
    print(f"cores: {os.cpu_count()}  (appends={args.appends}, replay≈{args.events} events)")
    broker = TestBroker()
    broker.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await bench_backend(
                "SQLite", f"sqlite+aiosqlite:///{tmp}/bench.db", args.appends, args.events, broker
            )
        cluster = PostgresCluster()
        cluster.start()
        try:
            cluster.psql("CREATE DATABASE bench")
            await bench_backend(
                "PostgreSQL", cluster.url("bench"), args.appends, args.events, broker
            )
        finally:
            cluster.stop()
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))

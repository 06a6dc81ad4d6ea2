"""What sealing personal data costs (docs/personal-data.md): the same work with the cipher
(the platform's store) and without it (a store that keeps payloads in clear), measured in
alternating rounds on the same database so drift falls on both sides alike.

- append: ``TicketReceived`` on a new stream, one event per transaction — for a returning
  customer (the data key cached) and for a new customer each time (a key created,
  wrapped and stored, and the phone's blind index written); this is the worst case, every
  event carrying personal data. And a ticket's events as the ledger holds them (one
  ``TicketReceived`` then nine events without personal data, the replay's seed), one
  event per transaction.
- replay: a ``ticket_state`` rebuild from the first event, over the same number of events
  written sealed and written in clear (two databases).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.measure import Result, combine
from shared.app.config import Settings
from shared.app.platform import Platform
from shared.eventstore.ledger import EventStore, StreamAppend, StreamHead
from shared.eventstore.migrations import upgrade
from shared.kernel.events.envelope import Actor, CommandContext
from shared.kernel.events.tickets import Customer, TicketReceived
from shared.readmodels.ticket_state import TicketStateProjection
from tests.support.factories import diagnosed, received

CONTEXT = CommandContext(actor=Actor(subject="bench", role="system"), service="bench")
_numbers = itertools.count(1)


def _ticket(new_customer: bool) -> TicketReceived:
    n = next(_numbers)
    if not new_customer:
        return received(n)
    return received(n, customer=Customer(name=f"Customer {n}", phone=f"139{n:08d}"))


async def append_received(
    platform: Platform, store: EventStore, count: int, *, new_customers: bool
) -> Result:
    """``count`` TicketReceived appends with ``store``, one per transaction."""
    latencies: list[float] = []
    appends = [
        StreamAppend(str(uuid.uuid4()), [_ticket(new_customers)], StreamHead(), "east")
        for _ in range(count)
    ]
    started, cpu = time.perf_counter(), time.process_time()
    for append in appends:
        t0 = time.perf_counter()
        await platform.db.write(lambda c, a=append: store.append(c, [a], CONTEXT))
        latencies.append(time.perf_counter() - t0)
    detail = {"cpu_seconds": time.process_time() - cpu}  # both threads: loop and writer
    return Result(count, time.perf_counter() - started, latencies, detail=detail)


async def append_lifecycle(platform: Platform, store: EventStore, count: int) -> Result:
    """``count`` events, ten per ticket (a TicketReceived, then nine without personal
    data), one per transaction with the head the previous append returned."""
    latencies: list[float] = []
    made = [_ticket(False) if n % 10 == 0 else diagnosed() for n in range(count)]
    started, cpu = time.perf_counter(), time.process_time()
    head, stream = StreamHead(), ""
    for n, event in enumerate(made):
        if n % 10 == 0:
            head, stream = StreamHead(), str(uuid.uuid4())
        append = StreamAppend(stream, [event], head, "east")
        t0 = time.perf_counter()
        (written,) = await platform.db.write(lambda c, a=append: store.append(c, [a], CONTEXT))
        latencies.append(time.perf_counter() - t0)
        head = StreamHead(written.stream_version, written.hash)
    detail = {"cpu_seconds": time.process_time() - cpu}
    return Result(count, time.perf_counter() - started, latencies, detail=detail)


def clear_store(platform: Platform) -> EventStore:
    """The same store without the cipher: payloads as they were before sealing."""
    return EventStore(clock=platform.clock, topic_prefix=platform.store.topic_prefix)


async def append_cost(
    platform: Platform, count: int, *, kind: str, per_round: int = 50
) -> tuple[Result, Result]:
    """(sealed, clear) in alternating rounds of ``per_round`` appends each, so the shared
    machine's drift falls on both alike. ``kind``: ``returning`` / ``new``
    (TicketReceived of a returning / a new customer each time) or ``lifecycle`` (a
    ticket's events). The sealed result's detail holds the median of the rounds' costs."""

    async def run(store: EventStore, n: int) -> Result:
        if kind == "lifecycle":
            return await append_lifecycle(platform, store, n)
        return await append_received(platform, store, n, new_customers=kind == "new")

    plain = clear_store(platform)
    await run(platform.store, 20)  # warm the caches
    sealed: list[Result] = []
    clear: list[Result] = []
    for r in range(max(2, count // per_round)):
        order = ((platform.store, sealed), (plain, clear))
        for store, results in order if r % 2 else reversed(order):
            results.append(await run(store, per_round))
    costs = sorted(1 - s.rate / c.rate for s, c in zip(sealed, clear, strict=True) if c.rate)
    both = combine(sealed), combine(clear)
    both[0].detail["median_round_cost"] = costs[len(costs) // 2] if costs else None
    return both


async def _seed(platform: Platform, store: EventStore, count: int, per_stream: int = 10) -> None:
    tickets = count // per_stream
    for start in range(0, tickets, 50):
        appends = [
            StreamAppend(
                str(uuid.uuid4()),
                [_ticket(False)] + [diagnosed()] * (per_stream - 1),
                StreamHead(),
                "east",
            )
            for _ in range(min(50, tickets - start))
        ]
        await platform.db.write(lambda c, a=appends: store.append(c, a, CONTEXT))


async def replay_cost(
    make_url: Callable[[str], Awaitable[str]], data_dir: Path, count: int, rounds: int = 4
) -> tuple[Result, Result]:
    """(sealed, clear): ``ticket_state`` rebuilt over ``count`` events written each way."""
    platforms = {}
    for name in ("sealed", "clear"):
        url = await make_url(f"cipher_{name}")
        upgrade(url)
        platform = Platform.from_settings(Settings(database_url=url, data_dir=data_dir))
        store = platform.store if name == "sealed" else clear_store(platform)
        await _seed(platform, store, count)
        platforms[name] = platform
    results: dict[str, list[Result]] = {"sealed": [], "clear": []}
    try:
        for r in range(rounds):
            for name in ("sealed", "clear") if r % 2 else ("clear", "sealed"):
                platform = platforms[name]
                started, cpu = time.perf_counter(), time.process_time()
                stats = await platform.runner.rebuild(TicketStateProjection())
                seconds = time.perf_counter() - started
                # CPU per event as well: steadier than throughput on a shared machine.
                detail = {"cpu_seconds": time.process_time() - cpu}
                results[name].append(Result(stats.applied, seconds, detail=detail))
    finally:
        for platform in platforms.values():
            await platform.close()
    return combine(results["sealed"]), combine(results["clear"])


def cost_note(sealed: Result, clear: Result) -> str:
    """The cipher's cost (target: at most 15 %): in throughput, and — steadier on a shared
    machine — in the process's CPU time per event when the run measured it."""
    if not sealed.rate or not clear.rate:
        return "cost: not measured"
    cost = 1 - sealed.rate / clear.rate
    verdict = "within" if cost <= 0.15 else "ABOVE"
    note = f"cipher cost {cost:+.1%} of throughput ({verdict} the 15 % target)"
    median = sealed.detail.get("median_round_cost")
    if median is not None:
        note += f", median of paired rounds {median:+.1%}"
    cpu = [r.detail.get("cpu_seconds") for r in (sealed, clear)]
    if cpu[0] and cpu[1] and sealed.count and clear.count:
        mine, theirs = cpu[0] / sealed.count * 1e6, cpu[1] / clear.count * 1e6
        note += f"; CPU {mine:.0f} vs {theirs:.0f} µs/event ({mine / theirs - 1:+.1%})"
    return note + "; reference: no cipher"

"""Ticketline's figures, each beside the physical limit measured in the same run.

    make bench                  # full run (about 20 minutes on 2 cores; import + console are half)
    make bench-quick            # python -m bench --quick: small counts, under 2 minutes
                                # (every section but outage, which takes its time)
    python -m bench --json bench.json --sections sqlite,http

The machine is shared and noisy, so absolute numbers drift from run to run; the ratio of
a Ticketline figure to the limit measured beside it (same minute, same disk, same load)
drifts much less. Sections:

- ``sqlite`` — ledger appends (one stream; 8 writers) beside bare ``sqlite3`` inserts, one
  row per transaction through one writer thread (bench/limits.py), measured half before
  and half after; relay to the Kafka-protocol test broker; projection replay (rounds of a
  ``ticket_state`` rebuild, each between two raw reads) beside a raw read +
  ``orjson.loads`` of the same ``events`` table.
- ``http`` — ``POST /tickets`` on ``ticketline run`` beside a bare FastAPI endpoint doing
  one aiosqlite INSERT per request (bench/bare_app.py), both separate processes driven by
  bench/loadgen.py in alternating rounds (the idle one is stopped with SIGSTOP).
- ``postgres`` — the same as ``sqlite`` on a throwaway cluster (tests/support/postgres.py:
  fsync and synchronous_commit off), beside bare asyncpg inserts on that cluster.
- ``list`` — ``GET /tickets`` p50 per filter (and ``POST /tickets``) at N rows beside 10k rows
  (bench/list_latency.py).
- ``import`` — ``ticketline import`` of a generated history (100k tickets) beside a bulk
  append of the same events, and its peak memory beside a 10k-ticket import (bench/imports.py).
- ``console`` — every operations console page, as headquarters and as a regional center,
  p50 and p95 beside the 300 ms target, on a database of N imported tickets with every
  projection caught up (bench/console_pages.py); then an auditor's ``ticketline replay``
  of every projection on that history, beside a raw read of its ledger
  (bench/replay_all.py).
- ``outage`` — the scaled topology as processes (PostgreSQL, the test broker, the four
  services, two relays, two Kafka projectors, the jobs) under four callers whose tickets'
  serials repeat (the repeat-repair reactor appends): the broker up, stopped, back
  (20 / 60 / 20 s); per phase tickets, command latency p50 / p99 / max, commands over
  1 s, errors, deadlocks, repeat-repair flags written, beside the same load with the
  broker up (bench/outage.py). Not in ``--quick`` unless named (then 5 / 15 / 5 s).

In ``sqlite`` and ``postgres``, the personal-data cipher's cost (bench/personal_data.py):
a ``TicketReceived`` append and a ``ticket_state`` rebuild with the cipher beside the same
work without it (target: at most 15 %).

To plug in a new Ticketline figure, write a coroutine returning a ``bench.measure.Result``
(``timed()`` or your own latencies) and put it beside its limit with
``Section.compare(figure, ticketline_result, limit_result, unit=…, metric=…)``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.console_pages import bench_console
from bench.imports import bench_import
from bench.limits import (
    asyncpg_insert_per_transaction,
    asyncpg_ledger_statements_per_transaction,
    postgres_server_version,
    raw_read_and_decode,
    split,
    sqlite_insert_per_transaction,
    sqlite_ledger_statements_per_transaction,
)
from bench.list_latency import NEW_TICKET, SMALL_ROWS, measure_list_latency
from bench.loadgen import json_post, run_load
from bench.measure import Result, combine
from bench.outage import bench_outage
from bench.personal_data import append_cost, cost_note, replay_cost
from bench.processes import ServerProcess, start_bare_endpoint, start_ticketline_run
from bench.report import Report, Section
from shared.app.config import Settings
from shared.app.platform import Platform
from shared.eventstore.ledger import StreamAppend, StreamHead
from shared.eventstore.migrations import upgrade
from shared.eventstore.outbox import KafkaPublisher, OutboxRelay
from shared.kernel.events.envelope import Actor, CommandContext
from shared.kernel.events.tickets import TicketReceived
from shared.readmodels.ticket_state import TicketStateProjection
from tests.support.broker import TestBroker
from tests.support.factories import diagnosed, received
from tests.support.postgres import PostgresCluster

CONTEXT = CommandContext(actor=Actor(subject="bench", role="system"), service="bench")
SECTIONS = ("sqlite", "http", "postgres", "list", "scale", "import", "console", "outage")
# Sections a --quick run leaves out unless --sections names them: they last as long as the
# phases they measure (the outage: over half a minute even at its quick size).
NOT_QUICK = ("outage",)
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "appends": 2000,
        "limit_inserts": 20_000,
        "events": 100_000,
        "requests": 3000,
        "bare_requests": 20_000,
        "http_seconds": 90.0,
        "rounds": 3,
        "list_rows": 1_000_000,
        "list_repeats": 40,
        "scale_events": 1_000_000,
        "import_tickets": 100_000,
        "import_small": 10_000,
        "console_tickets": 100_000,
        "console_repeats": 20,
        "console_seconds": 300.0,
        "outage_seconds": 60.0,
    },
    "quick": {
        "appends": 300,
        "limit_inserts": 5000,
        "events": 5000,
        "requests": 300,
        "bare_requests": 3000,
        "http_seconds": 20.0,
        "rounds": 2,
        "list_rows": 100_000,
        "list_repeats": 15,
        "scale_events": 100_000,
        "import_tickets": 3000,
        "import_small": 1000,
        "console_tickets": 2000,  # and its replay: the quick run stays under 2 minutes
        "console_repeats": 10,
        "console_seconds": 90.0,
        "outage_seconds": 15.0,
    },
}
_numbers = itertools.count(1)
_started = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _started:6.1f} s] {message}", file=sys.stderr, flush=True)


def new_ticket() -> TicketReceived:
    return received(next(_numbers))


# --- Ticketline's figures: each returns a Result (with per-transaction latencies where
# --- there are transactions), so the report can set it beside its limit.


async def ticketline_append_one_stream(platform: Platform, count: int) -> Result:
    """``count`` events on one stream, one event per transaction (the events made
    beforehand, as the limits' rows are: the figure is the append's)."""
    stream = str(uuid.uuid4())
    latencies: list[float] = []
    head = StreamHead()
    made = [new_ticket(), *(diagnosed() for _ in range(count - 1))]
    started = time.perf_counter()
    for event in made:
        t0 = time.perf_counter()
        # As a command does: the head it loaded is the expected one (no re-read).
        append = StreamAppend(stream, [event], head)
        (written,) = await platform.db.write(
            lambda c, a=append: platform.store.append(c, [a], CONTEXT)
        )
        head = StreamHead(written.stream_version, written.hash)
        latencies.append(time.perf_counter() - t0)
    return Result(count, time.perf_counter() - started, latencies)


async def ticketline_append_many_streams(
    platform: Platform, count: int, writers: int = 8
) -> Result:
    """``writers`` concurrent tasks, each opening new tickets: one event per transaction."""
    latencies: list[float] = []

    async def writer(appends: list[StreamAppend]) -> None:
        for append in appends:
            t0 = time.perf_counter()
            await platform.db.write(lambda c, a=append: platform.store.append(c, [a], CONTEXT))
            latencies.append(time.perf_counter() - t0)

    per = count // writers
    made = [
        [StreamAppend(str(uuid.uuid4()), [new_ticket()], StreamHead(), "east") for _ in range(per)]
        for _ in range(writers)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(writer(appends) for appends in made))
    return Result(per * writers, time.perf_counter() - started, latencies)


async def ticketline_relay(platform: Platform, broker: TestBroker) -> Result:
    """Drain the outbox to the Kafka-protocol test broker (acks=all), batches of 1000."""
    relay = OutboxRelay(
        platform.db,
        KafkaPublisher(broker.bootstrap_servers, enable_idempotence=False),
        batch_size=1000,
    )
    try:
        started = time.perf_counter()
        total = 0
        while n := await relay.publish_once():
            total += n
        return Result(total, time.perf_counter() - started)
    finally:
        await relay.publisher.close()


async def seed_bulk(platform: Platform, count: int, per_stream: int = 10) -> None:
    """Fast seeding for the replay figure: ten events a ticket, one transaction a ticket."""
    tickets = count // per_stream
    for start in range(0, tickets, 50):  # 50 tickets a transaction: seeding, not a figure
        appends = [
            StreamAppend(
                str(uuid.uuid4()),
                [new_ticket()] + [diagnosed()] * (per_stream - 1),
                StreamHead(),
                "east",
            )
            for _ in range(min(50, tickets - start))
        ]
        await platform.db.write(lambda c, a=appends: platform.store.append(c, a, CONTEXT))


async def ticketline_replay(platform: Platform) -> Result:
    """Rebuild ``ticket_state`` from the first event of the ledger."""
    started = time.perf_counter()
    applied = (await platform.runner.rebuild(TicketStateProjection())).applied
    return Result(applied, time.perf_counter() - started)


async def ticketline_post_tickets(
    server: ServerProcess, *, requests: int, seconds: float, concurrency: int, warmup: bool
) -> Result:
    """``POST /tickets`` on ``ticketline run`` (README's body, unique Idempotency-Key)."""
    make = json_post(
        "/tickets", server.host, server.port, headers={"Authorization": f"Bearer {server.token}"}
    )
    return await run_load(
        server.host,
        server.port,
        make,
        requests=requests,
        seconds=seconds,
        concurrency=concurrency,
        warmup_requests=None if warmup else 0,
        server_cpu=server.cpu_seconds,
    )


async def bare_post_tickets(
    server: ServerProcess,
    token: str,
    *,
    requests: int,
    seconds: float,
    concurrency: int,
    warmup: bool,
) -> Result:
    """The same requests (same headers, same bodies) on the bare endpoint."""
    make = json_post(
        "/tickets", server.host, server.port, headers={"Authorization": f"Bearer {token}"}
    )
    return await run_load(
        server.host,
        server.port,
        make,
        requests=requests,
        seconds=seconds,
        concurrency=concurrency,
        warmup_requests=None if warmup else 0,
        server_cpu=server.cpu_seconds,
    )


# --- Sections


async def around(
    limit: Callable[[int], Awaitable[Result]],
    total: int,
    figure: Callable[[], Awaitable[Result]],
) -> tuple[Result, Result]:
    """The limit in two halves, before and after the Ticketline figure: (figure, limit)."""
    first, second = split(total)
    before = await limit(first)
    result = await figure()
    after = await limit(second)
    return result, combine([before, after])


async def bench_cipher(
    name: str,
    section: Section,
    platform: Platform,
    args: argparse.Namespace,
    make_url: Callable[[str], Awaitable[str]],
) -> None:
    """The personal-data cipher beside the same work without it (bench/personal_data.py)."""
    figures = (
        ("returning", "TicketReceived append, sealed (returning customer)"),
        ("new", "TicketReceived append, sealed (a new customer each)"),
        ("lifecycle", "ticket's events append, sealed (1 in 10 personal)"),
    )
    for kind, figure in figures:
        progress(f"{name}: {figure} vs clear")
        sealed, clear = await append_cost(platform, args.appends, kind=kind)
        section.compare(figure, sealed, clear, unit="events/s", note=cost_note(sealed, clear))
        section.compare("  latency per transaction", sealed, clear, metric="p50")
    progress(f"{name}: ticket_state rebuild, sealed vs clear")
    data_dir = platform.settings.data_dir
    sealed, clear = await replay_cost(make_url, data_dir, max(20_000, args.events // 2))
    section.compare(
        "ticket_state rebuild, sealed events",
        sealed,
        clear,
        unit="events/s",
        note=cost_note(sealed, clear),
    )


async def bench_ledger(
    name: str,
    section: Section,
    platform: Platform,
    url: str,
    args: argparse.Namespace,
    broker: TestBroker | None,
    one_limit: Callable[[int], Awaitable[Result]],
    many_limit: Callable[[int], Awaitable[Result]],
    limit_note: str,
    floor: Callable[[int], Awaitable[Result]],
) -> None:
    progress(f"{name}: append, one stream")
    tl, limit = await around(
        one_limit, args.limit_inserts, lambda: ticketline_append_one_stream(platform, args.appends)
    )
    section.compare(
        "append, one stream (1 event/transaction)",
        tl,
        limit,
        unit="events/s",
        note=f"limit: {limit_note}, one caller",
    )
    section.compare("  latency per transaction", tl, limit, metric="p50")
    section.compare("  latency per transaction", tl, limit, metric="p99")
    progress(f"{name}: the ledger's statements alone")
    alone = await floor(args.limit_inserts)
    section.compare(
        "  floor: the ledger's statements alone",
        alone,
        limit,
        unit="events/s",
        note="what the schema costs: the append's own statements (position counter, event "
        "row and its indexes, outbox row) on the bare driver, rows made in advance",
    )
    section.compare(
        "  append beside that floor",
        tl,
        alone,
        unit="events/s",
        note="what the code costs: hashing, JSON, envelopes, the unit of work",
    )

    progress(f"{name}: append, 8 writers")
    tl, limit = await around(
        many_limit,
        args.limit_inserts,
        lambda: ticketline_append_many_streams(platform, args.appends),
    )
    section.compare(
        "append, many streams (8 writers)",
        tl,
        limit,
        unit="events/s",
        note=f"limit: {limit_note}, 8 concurrent callers",
    )
    section.compare("  latency per transaction", tl, limit, metric="p99")
    # Scaling judged on the same work: new tickets (sealed intakes) from one writer. The
    # one-stream figure above appends mostly lighter events, so it is not the reference.
    alone = await ticketline_append_many_streams(platform, max(200, args.appends // 2), writers=1)
    section.compare(
        "  8 writers beside one writer (same work)",
        tl,
        alone,
        unit="events/s",
        note="new tickets from one writer: above 1 is scaling",
    )

    if broker is not None:
        progress(f"{name}: relay")
        relay = await ticketline_relay(platform, broker)
        section.compare(
            "relay outbox → broker (acks=all)",
            relay,
            None,
            unit="events/s",
            note="no limit measured (Kafka-protocol test broker)",
        )

    await bench_replay(name, section, platform, url, args)


async def bench_replay(
    name: str, section: Section, platform: Platform, url: str, args: argparse.Namespace
) -> None:
    progress(f"{name}: seeding {args.events} events for the replay")
    await seed_bulk(platform, args.events)
    progress(f"{name}: replay")
    # Rounds of a rebuild between two raw reads: one rebuild takes about a second, and a
    # single one moved by a third between runs on a shared machine.
    raws = [await raw_read_and_decode(url)]
    replays = []
    for _ in range(args.rounds):
        replays.append(await ticketline_replay(platform))
        raws.append(await raw_read_and_decode(url))
    section.compare(
        "projection replay (ticket_state, from ledger)",
        combine(replays),
        combine(raws),
        unit="events/s",
        note=f"limit: raw read of the same events table, pages of 5,000, orjson.loads "
        f"each payload ({raws[0].count:,} events; {args.rounds} rebuilds, each between "
        "two raw reads)",
    )


async def bench_sqlite(report: Report, tmp: Path, args: argparse.Namespace, broker: Any) -> None:
    section = report.section("SQLite (embedded; WAL, synchronous=NORMAL)")
    directory = tmp / "sqlite"
    directory.mkdir()
    url = f"sqlite+aiosqlite:///{directory}/bench.db"
    limit_db = directory / "limit.db"
    floor_url = f"sqlite+aiosqlite:///{directory}/floor.db"
    upgrade(url)
    upgrade(floor_url)
    platform = Platform.from_settings(Settings(database_url=url, data_dir=directory))

    async def sqlite_url(name: str) -> str:
        return f"sqlite+aiosqlite:///{directory}/{name}.db"

    try:
        await bench_ledger(
            "SQLite",
            section,
            platform,
            url,
            args,
            broker,
            lambda n: sqlite_insert_per_transaction(limit_db, n),
            lambda n: sqlite_insert_per_transaction(limit_db, n, concurrency=8),
            "sqlite3 INSERT per BEGIN IMMEDIATE…COMMIT via one writer thread",
            lambda n: sqlite_ledger_statements_per_transaction(floor_url, n),
        )
        await bench_cipher("SQLite", section, platform, args, sqlite_url)
    finally:
        await platform.close()
    await bench_sqlite_full(report, directory, args)
    progress("SQLite: more limits (direct, synchronous=FULL)")
    for synchronous, hop in (("NORMAL", False), ("FULL", True), ("FULL", False)):
        limit = await sqlite_insert_per_transaction(
            limit_db, args.limit_inserts, synchronous=synchronous, via_thread_hop=hop
        )
        way = "one thread hop each" if hop else "direct, no hop"
        section.limit_only(
            f"limit: insert/transaction, {synchronous}, {way}", limit, unit="events/s"
        )


async def bench_sqlite_full(report: Report, directory: Path, args: argparse.Namespace) -> None:
    """Durable commits (TICKETLINE_SQLITE_SYNCHRONOUS=FULL): every commit reaches the disk,
    so the append is measured against a bare insert that syncs too."""
    section = report.section("SQLite with synchronous=FULL (every commit synced to disk)")
    url = f"sqlite+aiosqlite:///{directory}/bench-full.db"
    limit_db = directory / "limit-full.db"
    upgrade(url)
    platform = Platform.from_settings(Settings(database_url=url, sqlite_synchronous="FULL"))
    appends = max(200, args.appends // 4)
    try:
        progress("SQLite FULL: append, one stream")
        tl, limit = await around(
            lambda n: sqlite_insert_per_transaction(limit_db, n, synchronous="FULL"),
            max(400, args.limit_inserts // 10),
            lambda: ticketline_append_one_stream(platform, appends),
        )
        section.compare(
            "append, one stream (1 event/transaction)",
            tl,
            limit,
            unit="events/s",
            note="limit: sqlite3 INSERT per BEGIN IMMEDIATE…COMMIT, synchronous=FULL, "
            "via one writer thread",
        )
        progress("SQLite FULL: append, 8 writers")
        tl, limit = await around(
            lambda n: sqlite_insert_per_transaction(limit_db, n, synchronous="FULL", concurrency=8),
            max(400, args.limit_inserts // 10),
            lambda: ticketline_append_many_streams(platform, appends),
        )
        section.compare(
            "append, many streams (8 writers; group commit)",
            tl,
            limit,
            unit="events/s",
            note="limit: the same inserts from 8 concurrent callers",
        )
    finally:
        await platform.close()


async def bench_postgres(report: Report, tmp: Path, args: argparse.Namespace, broker: Any) -> None:
    section = report.section("PostgreSQL (throwaway cluster: fsync=off, synchronous_commit=off)")
    progress("PostgreSQL: starting a cluster")
    cluster = PostgresCluster()
    cluster.start()
    try:
        cluster.psql("CREATE DATABASE bench")
        url = cluster.url("bench")
        report.machine.postgresql = await postgres_server_version(url)
        upgrade(url)
        platform = Platform.from_settings(Settings(database_url=url, data_dir=tmp))

        async def postgres_url(name: str) -> str:
            cluster.psql(f"CREATE DATABASE {name}")
            return cluster.url(name)

        floor_url = await postgres_url("bench_floor")
        upgrade(floor_url)
        try:
            await bench_ledger(
                "PostgreSQL",
                section,
                platform,
                url,
                args,
                broker,
                lambda n: asyncpg_insert_per_transaction(url, n),
                lambda n: asyncpg_insert_per_transaction(url, n, concurrency=8),
                "asyncpg prepared INSERT per conn.transaction()",
                lambda n: asyncpg_ledger_statements_per_transaction(floor_url, n),
            )
            await bench_cipher("PostgreSQL", section, platform, args, postgres_url)
        finally:
            await platform.close()
    finally:
        cluster.stop()


async def http_rounds(tl: Any, bare: Any, args: argparse.Namespace) -> dict[str, list[Result]]:
    """Interleaved rounds, the idle server paused: each figure beside its limit in time."""
    assert tl.token is not None
    rounds = max(1, args.rounds)
    per_requests = {
        "ticketline": split(args.requests, rounds),
        "bare": split(args.bare_requests, rounds),
    }
    results: dict[str, list[Result]] = {"ticketline": [], "bare": []}
    for r in range(rounds):
        order = ("bare", "ticketline") if r % 2 == 0 else ("ticketline", "bare")
        for name in order:
            running, idle = (tl, bare) if name == "ticketline" else (bare, tl)
            idle.pause()
            running.resume()
            progress(f"HTTP: round {r + 1}/{rounds}, {name}")
            kwargs: dict[str, Any] = {
                "requests": per_requests[name][r],
                "seconds": args.http_seconds / rounds,
                "concurrency": args.concurrency,
                "warmup": r == 0,
            }
            if name == "ticketline":
                results[name].append(await ticketline_post_tickets(tl, **kwargs))
            else:
                results[name].append(await bare_post_tickets(bare, tl.token, **kwargs))
    tl.resume()
    bare.resume()
    return results


async def bench_http(report: Report, tmp: Path, args: argparse.Namespace) -> None:
    section = report.section(
        f"HTTP POST /tickets: ticketline run vs bare endpoint ({args.concurrency} keep-alive "
        "callers; SQLite; intake rate limit lifted)",
        reference_header="bare endpoint",
    )
    directory = tmp / "http"
    directory.mkdir()
    progress("HTTP: starting ticketline run and the bare endpoint")
    with (
        start_ticketline_run(directory / "ticketline") as tl,
        start_bare_endpoint(directory / "bare.db") as bare,
    ):
        results = await http_rounds(tl, bare, args)
    ticketline, limit = combine(results["ticketline"]), combine(results["bare"])

    def errors(result: Result) -> str:
        statuses = result.detail.get("statuses", {})
        return f"{result.errors} errors, statuses {statuses}"

    section.compare(
        "POST /tickets throughput",
        ticketline,
        limit,
        unit="req/s",
        note=f"ticketline: {errors(ticketline)}; bare: {errors(limit)}",
    )
    section.compare("  latency", ticketline, limit, metric="p50")
    section.compare("  latency", ticketline, limit, metric="p95")
    section.compare("  latency", ticketline, limit, metric="p99")

    def cpu_ms(result: Result, key: str) -> float | None:
        cpu = result.detail.get(key)
        return cpu / result.count * 1000 if cpu is not None and result.count else None

    section.add(
        "  server CPU per request",
        cpu_ms(ticketline, "server_cpu_seconds"),
        cpu_ms(limit, "server_cpu_seconds"),
        unit="ms",
        note="user+system CPU of the server process during the measured rounds",
    )
    section.add(
        "  client CPU per request",
        cpu_ms(ticketline, "client_cpu_seconds"),
        cpu_ms(limit, "client_cpu_seconds"),
        unit="ms",
        note="the load generator's own CPU (it shares the cores)",
    )


async def bench_list(report: Report, tmp: Path, args: argparse.Namespace) -> None:
    progress(f"list latency: seeding {SMALL_ROWS:,} and {args.list_rows:,} tickets")
    result = await measure_list_latency(tmp / "list", args.list_rows, repeats=args.list_repeats)
    section = report.section(
        f"GET /tickets (and POST /tickets) p50 by table size (in process, ASGI; ticket_state seeded in "
        f"{result.seed_seconds:.0f} s)",
        value_header=f"@ {result.large_rows:,}",
        reference_header=f"@ {result.small_rows:,}",
    )
    for label, large in result.large.items():
        small = result.small[label]
        rows_small, rows_large = result.page_sizes[label]
        failures = small.errors + large.errors
        note = "" if label == NEW_TICKET else f"rows returned {rows_small}/{rows_large}"
        if failures:
            note += f"; {failures} non-2xx"
        section.compare(
            f"?{label}" if label[0] != "(" else label, large, small, metric="p50", note=note
        )


async def bench_scale(report: Report, tmp: Path, args: argparse.Namespace) -> None:
    """ticket_state rebuilt from N and N/10 events (SQLite), each in its own process: the
    rate beside the raw read-and-decode of the same table, and the peak memory of both."""
    from bench.rebuild_scale import raw_rate, rebuild_in_subprocess

    section = report.section("ticket_state rebuild at scale (SQLite, a process of its own)")
    figures: dict[int, tuple[dict[str, Any], float]] = {}
    for events in (args.scale_events // 10, args.scale_events):
        url = f"sqlite+aiosqlite:///{tmp}/scale-{events}.db"
        upgrade(url)
        platform = Platform.from_settings(Settings(database_url=url))
        try:
            progress(f"scale: seeding {events:,} events")
            await seed_bulk(platform, events)
        finally:
            await platform.close()
        progress(f"scale: rebuilding {events:,} events")
        figures[events] = (await asyncio.to_thread(rebuild_in_subprocess, url), await raw_rate(url))
    for events, (rebuilt, raw) in figures.items():
        rate = rebuilt["events"] / rebuilt["seconds"] if rebuilt["seconds"] else 0.0
        section.add(
            f"rebuild of {events:,} events",
            rate,
            raw,
            unit="events/s",
            note="limit: raw read of the same table + orjson.loads, pages of 5,000",
        )
    (small, _), (large, _) = figures.values()
    section.add(
        "peak memory (max RSS of the rebuilding process)",
        large["max_rss_mb"],
        small["max_rss_mb"],
        unit="MB",
        note=f"beside the same rebuild of a ledger ten times smaller: flat memory is a "
        f"ratio near 1 ({large['events']:,} vs {small['events']:,} events)",
    )


async def run_section(report: Report, name: str, fn: Callable[[], Awaitable[None]]) -> None:
    try:
        await fn()
    except Exception as exc:
        traceback.print_exc()
        report.section(name).failed(name, f"{type(exc).__name__}: {exc}")


async def main(args: argparse.Namespace) -> Report:
    report = Report(
        settings={
            "profile": "quick" if args.quick else "full",
            **{k: getattr(args, k) for k in PROFILES["full"]},
            "concurrency": args.concurrency,
            "sections": ",".join(args.sections),
        }
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ticketline-bench-") as name:
        tmp = Path(name)
        broker = None
        if "sqlite" in args.sections or "postgres" in args.sections:
            progress("starting the Kafka-protocol test broker")
            broker = TestBroker()
            broker.start()
        try:
            if "sqlite" in args.sections:
                await run_section(report, "SQLite", lambda: bench_sqlite(report, tmp, args, broker))
            if "http" in args.sections:
                await run_section(report, "HTTP", lambda: bench_http(report, tmp, args))
            if "postgres" in args.sections:
                await run_section(
                    report, "PostgreSQL", lambda: bench_postgres(report, tmp, args, broker)
                )
            if "list" in args.sections:
                await run_section(report, "GET /tickets", lambda: bench_list(report, tmp, args))
            if "scale" in args.sections:
                await run_section(
                    report, "Rebuild at scale", lambda: bench_scale(report, tmp, args)
                )
            if "import" in args.sections:
                await run_section(
                    report, "Import", lambda: bench_import(report, tmp, args, progress)
                )
            if "console" in args.sections:
                await run_section(
                    report, "Console pages", lambda: bench_console(report, tmp, args, progress)
                )
            if "outage" in args.sections:
                await run_section(
                    report, "Broker outage", lambda: bench_outage(report, tmp, args, progress)
                )
        finally:
            if broker is not None:
                broker.stop()
    report.machine.finish(time.perf_counter() - started)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: under 2 minutes")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--sections",
        default=None,
        help=f"comma-separated, from {','.join(SECTIONS)} (default: all; with --quick all "
        f"but {','.join(NOT_QUICK)})",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP callers")
    helps = {
        "appends": "Ticketline appends per append figure",
        "limit_inserts": "limit transactions per limit figure (half before, half after)",
        "events": "events seeded for the replay figure",
        "requests": "POST /tickets requests to ticketline run (split over the rounds)",
        "bare_requests": "requests to the bare endpoint (split over the rounds)",
        "http_seconds": "time bound per server for the HTTP figure (split over the rounds)",
        "rounds": "alternating HTTP rounds",
        "list_rows": "tickets in the large ticket_state",
        "list_repeats": "requests per filter and size",
        "scale_events": "events in the larger rebuild at scale (the smaller has a tenth)",
        "import_tickets": "tickets in the generated history imported",
        "import_small": "tickets in the smaller history (peak memory reference)",
        "console_tickets": "tickets in the generated history behind the console pages",
        "console_repeats": "rounds of every console page per caller (after a warm-up)",
        "console_seconds": "time bound for the console pages' rounds",
        "outage_seconds": "broker stopped this long (up and back: a third of it each)",
    }
    for key, text in helps.items():
        kind = type(PROFILES["full"][key])
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{text} (full {PROFILES['full'][key]}, quick {PROFILES['quick'][key]})",
        )
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sections is None:
        args.sections = ",".join(s for s in SECTIONS if not (args.quick and s in NOT_QUICK))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    print(result.render(), flush=True)
    if arguments.json:
        result.write_json(arguments.json)
        print(f"JSON: {arguments.json}")

"""The operations console's pages at N tickets: p50 and p95 per page beside the target
(issue 18: every page in at most 300 ms p95 with 100k tickets in the database).

The database is seeded the way an operator fills one: ``ticketline import`` of a
generated history (tests/support/history.py: network, parts, stock, usage, then N
tickets through the services' own decide functions, in a process of its own), then every
projection caught up to the ledger's head (one ``LedgerPump`` read per page of events),
so the read models the console reads — ``ticket_state``, the compliance view, SLA clocks,
scorecards, repairs and quality alerts — are all filled. The seeded files stay in the
bench's temporary directory for the run only.

The pages run **in process**: httpx's ASGITransport on the console app
(``services/console/app.py``) with a platform on that database, signed in through the
sign-in form as a browser is (the token in the console's cookie). Each page is asked
for as headquarters (an auditor: every region) and as a regional center (east), round
after round — every page once per round, so noise on the shared cores hits all pages
alike; the first round is a warm-up and not counted. The platform's clock stands one
hour after the newest ticket, so the board's risk colours, the SLA lists and the
default month are those of a live system rather than of a history long past.

Excluded from the target: *Verify now* on the audit page (``POST /audit/verification``)
is an on-demand verification of the whole ledger of the caller's scope, run in batches
of 2,000 events in the background while the page polls. It is not a page; the report
gives the time of one batch instead (how long a page can wait behind it) and the polled
status fragment (``GET /audit/verification``) is a page like any other.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.imports import cli_import
from bench.measure import Deadline, Result
from bench.replay_all import bench_replay_all

TARGET_MS = 300.0
REGIONAL = "east"  # the regional center measured (the generated history has east and west)
ROLES = (("HQ", "auditor", None), ("east", "regional_center", REGIONAL))


@dataclass
class Seeded:
    """A seeded data directory and what the pages are asked about."""

    data_dir: Path
    tickets: int
    seconds: float
    now: datetime  # the console's clock: one hour after the newest ticket
    month: str  # the history's busiest complete month
    week: str  # an ISO week inside that month
    ticket_ids: list[str] = field(default_factory=list)  # east tickets with a long timeline
    events: int = 0


def settings_for(data_dir: Path) -> Any:
    from shared.app.config import Settings
    from tests.support.auth import TEST_AUTH

    url = f"sqlite+aiosqlite:///{data_dir}/ticketline.db"
    return Settings(database_url=url, data_dir=data_dir, auth=TEST_AUTH)


async def seed(
    directory: Path, tickets: int, progress: Callable[[str], None] = lambda _: None
) -> Seeded:
    """Import a generated history of ``tickets`` tickets into ``directory`` and catch up
    every projection (see the module's docstring)."""
    from shared.eventstore.migrations import upgrade
    from tests.support.history import ORDER, write_history

    started = time.perf_counter()
    files = await asyncio.to_thread(write_history, directory / "files", tickets)
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(f"sqlite+aiosqlite:///{data_dir}/ticketline.db")
    for kind in ORDER:
        progress(f"console: importing {kind}")
        extra = ("--skip-invalid",) if kind == "tickets" else ()
        await asyncio.to_thread(cli_import, data_dir, kind, files[kind], *extra)
    progress("console: catching up every projection")
    events = await catch_up_all(data_dir)
    seeded = await describe(data_dir, tickets, time.perf_counter() - started)
    seeded.events = events
    return seeded


async def catch_up_all(data_dir: Path) -> int:
    """Every read model (not the reactors: they would issue commands) to the head."""
    from shared.app.platform import Platform
    from shared.app.registry import all_projections
    from shared.eventstore.pump import LedgerPump
    from shared.eventstore.tables import events

    platform = Platform.from_settings(settings_for(data_dir))
    try:
        pump = LedgerPump(platform.runner, list(all_projections().values()), batch_size=2000)
        await pump.catch_up()
        head = await platform.db.read(
            lambda c: int(c.execute(select(func.max(events.c.position))).scalar() or 0)
        )
        behind = {name: at for name, at in pump.checkpoints.items() if at < head}
        if behind:
            raise RuntimeError(f"projections behind the head {head}: {behind}")
        return head
    finally:
        await platform.close()


async def describe(data_dir: Path, tickets: int, seconds: float) -> Seeded:
    """The clock, month, week and tickets the pages are asked about."""
    from shared.app.platform import Platform
    from shared.readmodels.ticket_state import ticket_state

    t = ticket_state.c
    platform = Platform.from_settings(settings_for(data_dir))

    def read(conn: Any) -> tuple[datetime, datetime, list[str]]:
        first, last = conn.execute(select(func.min(t.created_at), func.max(t.created_at))).one()
        ids = conn.execute(
            select(t.ticket_id)
            .where(t.region == REGIONAL, t.status == "closed", t.repaired_at.is_not(None))
            .order_by(t.ticket_id)
            .limit(20)
        ).scalars()
        return first, last, list(ids)

    try:
        first, last, ids = await platform.db.read(read)
    finally:
        await platform.close()
    middle = first + (last - first) / 2
    return Seeded(
        data_dir=data_dir,
        tickets=tickets,
        seconds=seconds,
        now=last + timedelta(hours=1),
        month=f"{middle:%Y-%m}",
        week="{}-W{:02d}".format(*date.isocalendar(middle.date())[:2]),
        ticket_ids=ids,
    )


def pages(seeded: Seeded, region: str | None) -> dict[str, str]:
    """Every console page (label → URL) as one caller asks for them. ``{next}`` marks a
    list's second page: its URL is taken from the first page's *next* link."""
    month, week = seeded.month, seeded.week
    other = "west" if region is None else REGIONAL
    return {
        "board": "/board",
        f"board ?region={other}": f"/board?region={other}",
        "board ?urgency=urgent": "/board?urgency=urgent",
        f"board ?service_point=sp-{REGIONAL}-1": f"/board?service_point=sp-{REGIONAL}-1",
        "board ?status=dispatched (50)": "/board?status=dispatched",
        "board ?status=dispatched, page 2": "{next}/board?status=dispatched",
        "board columns (live reload)": "/board/columns",
        "ticket (timeline, checklist)": "{ticket}",
        "sla": "/sla",
        "sla resolution, breached": "/sla?kind=resolution&state=breached",
        "sla resolution, breached, page 2": "{next}/sla?kind=resolution&state=breached",
        "sla resolution, at risk": "/sla?kind=resolution&state=at_risk",
        "compliance by region": f"/compliance?month={month}",
        "compliance by service point": f"/compliance?month={month}&group_by=service_point",
        "compliance by month (6)": f"/compliance?month={month}&group_by=month",
        "compliance tickets (sla)": f"/compliance/tickets?month={month}&rate=sla",
        "compliance tickets (all)": f"/compliance/tickets?month={month}&rate=all",
        "compliance tickets (all), page 2": f"{{next}}/compliance/tickets?month={month}&rate=all",
        "quality": f"/quality?week={week}",
        "live": "/live",
        "audit": "/audit",
        "audit verification status": "/audit/verification",
    }


NEXT_LINK = re.compile(r'rel="next" href="([^"]+)"')


@dataclass
class PageTimes:
    """Per (caller, page): latencies of 200 answers, other answers, and sizes."""

    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    kilobytes: dict[tuple[str, str], float] = field(default_factory=dict)

    def result(self, key: tuple[str, str]) -> Result:
        samples = self.latencies.get(key, [])
        statuses = self.failures.get(key, [])
        return Result(
            len(samples),
            sum(samples),
            samples,
            errors=len(statuses),
            detail={"kB": self.kilobytes.get(key), "failed_statuses": statuses},
        )


@dataclass
class ConsoleTimes:
    seeded: Seeded
    pages: dict[tuple[str, str], Result]
    rounds: int
    verify_batch: Result | None = None


async def signed_in_client(app: Any, role: str, region: str | None) -> Any:
    """A browser-like client, signed in through the console's form (the token goes into
    its HttpOnly cookie)."""
    import httpx

    from tests.support.auth import token_for

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")
    token = token_for(role, subject=f"bench-{role}", region=region, ttl_seconds=6 * 3600)
    signed = await client.post("/sign-in", data={"token": token, "next": "/board"})
    if signed.status_code != 303:
        await client.aclose()
        raise RuntimeError(f"sign-in as {role} failed: {signed.status_code}")
    return client


async def resolve(client: Any, url: str, seeded: Seeded) -> str | None:
    """A page's concrete URL (a list's second page from its first page's link)."""
    if url == "{ticket}":
        return f"/tickets/{seeded.ticket_ids[0]}" if seeded.ticket_ids else None
    if url.startswith("{next}"):
        first = await client.get(url.removeprefix("{next}"))
        found = NEXT_LINK.search(first.text)
        return found.group(1).replace("&amp;", "&") if found else None
    return url


async def time_pages(
    seeded: Seeded, clients: dict[str, Any], repeats: int, max_seconds: float
) -> tuple[PageTimes, int]:
    """Every page of every caller once per round; round 0 is the warm-up."""
    times = PageTimes()
    urls: dict[tuple[str, str], str | None] = {}
    for who, client in clients.items():
        region = None if who == "HQ" else REGIONAL
        for label, url in pages(seeded, region).items():
            urls[(who, label)] = await resolve(client, url, seeded)
    deadline = Deadline(max_seconds)
    rounds = 0
    for repeat in range(repeats + 1):
        if repeat and deadline.expired():
            break
        for (who, label), url in urls.items():
            if url is None:
                continue
            if url.startswith("/tickets/"):
                url = f"/tickets/{seeded.ticket_ids[repeat % len(seeded.ticket_ids)]}"
            t0 = time.perf_counter()
            response = await clients[who].get(url)
            elapsed = time.perf_counter() - t0
            key = (who, label)
            if response.status_code != 200:
                times.failures.setdefault(key, []).append(response.status_code)
            elif repeat:
                times.latencies.setdefault(key, []).append(elapsed)
                times.kilobytes[key] = len(response.content) / 1024
        rounds = repeat
    for key, url in urls.items():
        if url is None:
            times.failures.setdefault(key, []).append(0)  # no such page (no next link)
    return times, rounds


async def time_verify_batches(platform: Any, batches: int) -> Result:
    """The on-demand verification's unit of work: one batch of 2,000 events (a page asked
    for meanwhile waits for at most one batch on the read thread)."""
    from services.console import queries

    progress = queries.VerifyProgress(None)
    latencies = []
    for _ in range(batches):
        t0 = time.perf_counter()
        more = await platform.db.read(lambda c: queries.verify_batch(c, progress))
        latencies.append(time.perf_counter() - t0)
        if not more:
            break
    return Result(len(latencies), sum(latencies), latencies, detail={"events": 2000})


async def measure_console_pages(
    seeded: Seeded, *, repeats: int = 20, max_seconds: float = 300.0, verify_batches: int = 10
) -> ConsoleTimes:
    """Time every page for each caller in :data:`ROLES` on the seeded database."""
    from services.console.app import create_app
    from shared.app.platform import Platform
    from shared.kernel.clock import ManualClock

    platform = Platform.from_settings(settings_for(seeded.data_dir), clock=ManualClock(seeded.now))
    clients: dict[str, Any] = {}
    try:
        app = create_app(platform)
        for who, role, region in ROLES:
            clients[who] = await signed_in_client(app, role, region)
        times, rounds = await time_pages(seeded, clients, repeats, max_seconds)
        verify = await time_verify_batches(platform, verify_batches)
    finally:
        for client in clients.values():
            await client.aclose()
        await platform.close()
    keys = [(who, label) for who, _, region in ROLES for label in pages(seeded, region)]
    return ConsoleTimes(seeded, {key: times.result(key) for key in keys}, rounds, verify)


def over_target(times: ConsoleTimes) -> list[tuple[str, str, float]]:
    """(caller, page, p95 in ms) of every page slower than the target."""
    found = []
    for (who, label), result in times.pages.items():
        p95 = result.p95
        if p95 is not None and p95 * 1000 > TARGET_MS:
            found.append((who, label, p95 * 1000))
    return found


def report_rows(section: Any, times: ConsoleTimes) -> None:
    """One row per (caller, page): p95 beside the target, p50 and the page size noted."""
    for (who, label), result in times.pages.items():
        s = result.summary()
        notes = [f"p50 {s['p50_ms']:.0f} ms" if s["p50_ms"] is not None else "not measured"]
        if result.detail.get("kB") is not None:
            notes.append(f"{result.detail['kB']:.0f} kB")
        if result.errors:
            notes.append(f"{result.errors} non-200 {sorted(set(result.detail['failed_statuses']))}")
        if s["p95_ms"] is not None and s["p95_ms"] > TARGET_MS:
            notes.append("OVER TARGET")
        section.add(f"{who}: {label}", s["p95_ms"], TARGET_MS, unit="ms p95", note="; ".join(notes))
    verify = times.verify_batch
    if verify is not None and verify.latencies:
        s = verify.summary()
        section.add(
            "verify now: one batch of 2,000 events (HQ)",
            s["p95_ms"],
            None,
            unit="ms p95",
            note=f"p50 {s['p50_ms']:.0f} ms; on demand, in the background: not a page, "
            "excluded from the target",
        )


async def bench_console(
    report: Any, tmp: Path, args: Any, progress: Callable[[str], None]
) -> ConsoleTimes:
    """The ``console`` section of ``python -m bench``."""
    progress(f"console: seeding {args.console_tickets:,} tickets")
    seeded = await seed(tmp / "console", args.console_tickets, progress)
    progress(f"console: timing the pages ({args.console_repeats} rounds)")
    times = await measure_console_pages(
        seeded, repeats=args.console_repeats, max_seconds=args.console_seconds
    )
    section = report.section(
        f"Console pages ({seeded.tickets:,} tickets, {seeded.events:,} events; in process, "
        f"ASGI; seeded by import + catch-up in {seeded.seconds:.0f} s; {times.rounds} rounds; "
        f"clock {seeded.now:%Y-%m-%d %H:%M}, month {seeded.month}, week {seeded.week})",
        value_header="p95",
        reference_header="target",
    )
    report_rows(section, times)
    for who, label, p95 in over_target(times):
        progress(f"console: OVER TARGET {who}: {label} p95 {p95:.0f} ms")
    progress("console: ticketline replay of every projection on the same history")
    await bench_replay_all(report, seeded.data_dir, seeded.tickets)
    return times

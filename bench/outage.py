"""A broker outage under load, on the scaled topology as real processes (docs/operations.md,
"A broker outage under load").

PostgreSQL (tests/support/postgres.py), the Kafka-protocol test broker, ``ticketline
migrate``, the four services (``ticketline serve``), two relays, two ``ticketline project
--source kafka`` and ``ticketline jobs``, all on 127.0.0.1 (bench/processes.py). Four
closed-loop callers open tickets whose serial numbers repeat (40 serials), so once the
first repairs are in most new tickets make the repeat-repair reactor (in the projector
processes) append a flag; one ticket in four goes on site (diagnosis, dispatch, visit,
repair), the others are fixed by remote guidance. Three phases: the broker up, stopped,
back (a new, empty broker on the same port, its topics created while the relays and
projectors are paused, as tests/test_scaled_e2e.py does).

Per phase, each command counted in the phase it was sent in: tickets opened, commands'
latency (every command appends) p50 / p99 / max, commands over 1 s, errors, PostgreSQL's
deadlocks (``pg_stat_database``), the repeat-repair flags written and the longest
"idle in transaction" seen (sampled twice a second). The reference column is the same
load with the broker up, in the same run.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.limits import postgres_server_version
from bench.measure import Result
from bench.processes import ScaledTopology, start_scaled_topology
from bench.report import Report, Section
from services.intake.schemas import RECEIVE_EXAMPLE
from shared.eventstore.kafka import ensure_topics, event_topics
from tests.support.auth import TEST_JWT_SECRET, headers_for
from tests.support.broker import TestBroker
from tests.support.dispatch_network import POINTS, hours
from tests.support.postgres import PostgresCluster

CALLERS = 4
SERIALS = 40
SLOW = 1.0  # seconds: a command slower than this is a stalled append
TIMEOUT = 60.0  # seconds per request: a stall longer than that is an error
TECHNICIAN = "t-outage"
LABELS = {"up": "broker up", "down": "broker stopped", "back": "broker back"}
ON_SITE_DIAGNOSIS = {
    "category": "quality_defect",
    "complexity": "general",
    "resolution_path": "on_site",
}
ON_SITE = (
    ("intake", "diagnosis", "call_center_agent", ON_SITE_DIAGNOSIS),
    ("dispatch", "dispatch", "dispatcher", {}),
    ("dispatch", "visit", "technician", {"findings": "drum bearing worn"}),
    ("dispatch", "repair", "technician", {"outcome": "fixed", "labour_minutes": 20}),
)
REMOTE_FIX = {
    "category": "misuse",
    "complexity": "simple",
    "resolution_path": "remote_guidance",
    "remote_outcome": "fixed",
}


@dataclass
class Command:
    sent: float  # time.perf_counter()
    seconds: float
    kind: str
    status: int  # 0: no answer (refused, timed out)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Callers:
    """Closed-loop callers on the services' APIs, each command timed."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.clients = {
            name: httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT)
            for name, port in ports.items()
        }
        self.headers = {
            role: headers_for(role, subject=TECHNICIAN if role == "technician" else None)
            for role in ("admin", "call_center_agent", "dispatcher", "technician")
        }
        self.commands: list[Command] = []
        self.numbers = itertools.count()

    async def post(self, service: str, path: str, role: str, body: dict[str, Any]) -> Any:
        """The command's answer (JSON), None when it failed; timed into ``commands``."""
        headers = {**self.headers[role], "Idempotency-Key": uuid.uuid4().hex}
        sent = time.perf_counter()
        try:
            response = await self.clients[service].post(path, headers=headers, json=body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        kind = path.rsplit("/", 1)[-1]
        self.commands.append(Command(sent, time.perf_counter() - sent, kind, status))
        if 200 <= status < 300:
            return response.json()
        await asyncio.sleep(0.1)  # a caller meeting errors must not spin
        return None

    async def network(self) -> None:
        """Service points and one technician on duty round the clock in the east."""
        for point in POINTS:
            assert await self.post("dispatch", "/service-points", "admin", point) is not None
        week = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        technician = {
            "id": TECHNICIAN,
            "name": "Bench Technician",
            "service_point_id": "sp-east-1",
            "skills": ["washing_machines"],
            "working_hours": hours(week, "00:00", "23:59"),
        }
        assert await self.post("dispatch", "/technicians", "admin", technician) is not None
        self.commands.clear()

    async def caller(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            i = next(self.numbers)
            body = copy.deepcopy(RECEIVE_EXAMPLE)
            body["customer"]["phone"] = f"139{i:08d}"
            body["product"]["serial_number"] = f"SN-OUTAGE-{i % SERIALS:03d}"
            ticket = await self.post("intake", "/tickets", "call_center_agent", body)
            if ticket is None or stop.is_set():
                continue
            path = f"/tickets/{ticket['ticket_id']}"
            if i % 4 != 3:
                await self.post("intake", f"{path}/diagnosis", "call_center_agent", REMOTE_FIX)
                continue
            for service, step, role, fields in ON_SITE:
                answer = await self.post(service, f"{path}/{step}", role, fields)
                if answer is None or stop.is_set():
                    break

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


@dataclass
class Phase:
    name: str
    start: float  # time.perf_counter()
    wall: float  # time.time() at start
    end: float = 0.0
    wall_end: float = 0.0
    deadlocks: int = 0
    flags: int = 0
    idle_max: float = 0.0
    idle_xact_max: float = 0.0

    def result(self, commands: list[Command]) -> Result:
        mine = [c for c in commands if self.start <= c.sent < self.end]
        ok = [c for c in mine if c.ok]
        return Result(
            count=len(ok),
            seconds=self.end - self.start,
            latencies=[c.seconds for c in ok],
            errors=len(mine) - len(ok),
            detail={
                "tickets": sum(1 for c in ok if c.kind == "tickets"),
                "slow": sum(1 for c in mine if c.seconds > SLOW),
                "max_seconds": max((c.seconds for c in mine), default=0.0),
                "failed": dict(Counter(f"{c.kind} {c.status}" for c in mine if not c.ok)),
                "deadlocks": self.deadlocks,
                "flags": self.flags,
            },
        )


async def sample_idle(dsn: str, phases: list[Phase], stop: asyncio.Event) -> None:
    """The longest "idle in transaction" now (and its transaction's age), into the phase
    running, every half second."""
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            idle, xact = await conn.fetchrow(
                "SELECT coalesce(max(extract(epoch FROM now() - state_change)), 0), "
                "coalesce(max(extract(epoch FROM now() - xact_start)), 0) "
                "FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            )
            phase = phases[-1]
            phase.idle_max = max(phase.idle_max, float(idle))
            phase.idle_xact_max = max(phase.idle_xact_max, float(xact))
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def run_phases(
    topology: ScaledTopology,
    broker: TestBroker,
    dsn: str,
    seconds: dict[str, float],
    progress: Callable[[str], None],
) -> tuple[list[Phase], list[Command]]:
    callers = Callers(topology.ports)
    conn = await asyncpg.connect(dsn)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await callers.network()
        deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        phases: list[Phase] = []
        for name, length in seconds.items():
            phases.append(Phase(name, time.perf_counter(), time.time()))
            phases[-1].deadlocks = await conn.fetchval(deadlocks)
            progress(f"outage: {LABELS[name]} ({length:.0f} s)")
            if name == "down":
                await asyncio.to_thread(broker.stop)
            elif name == "back":
                # Its topics exist before a relay or projector meets the new broker: the
                # test broker would take a produce to a missing topic and fail that
                # topic's later writes, which Apache Kafka never does.
                with topology.paused(("relay-", "projector-")):
                    await asyncio.to_thread(broker.start)
                    await ensure_topics(
                        broker.bootstrap_servers, event_topics("ticketline"), partitions=4
                    )
            if not tasks:
                tasks = [asyncio.create_task(callers.caller(stop)) for _ in range(CALLERS)]
                tasks.append(asyncio.create_task(sample_idle(dsn, phases, stop)))
            await asyncio.sleep(max(0.0, phases[-1].start + length - time.perf_counter()))
            phases[-1].end = time.perf_counter()
        # The last commands sent finish in the last phase (bounded by the request timeout).
        stop.set()
        await asyncio.wait(tasks, timeout=TIMEOUT + 10)
        phases[-1].wall_end = time.time()
        ends = [p.deadlocks for p in phases[1:]] + [await conn.fetchval(deadlocks)]
        flagged = await conn.fetch(
            "SELECT extract(epoch FROM recorded_at) AS at FROM events "
            "WHERE event_type = 'RepeatRepairFlagged'"
        )
        for phase, following, end in zip(phases, [*phases[1:], None], ends, strict=True):
            phase.deadlocks = end - phase.deadlocks
            phase.wall_end = following.wall if following else phase.wall_end
            phase.flags = sum(1 for r in flagged if phase.wall <= float(r["at"]) < phase.wall_end)
        return phases, callers.commands
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
        await callers.close()


def report_rows(section: Section, phases: list[Phase], commands: list[Command]) -> None:
    up, *others = phases
    reference = up.result(commands)
    ref = reference.detail
    for phase in others:
        result = phase.result(commands)
        got = result.detail
        label = LABELS[phase.name]
        tickets = Result(got["tickets"], result.seconds)
        section.compare(
            f"{label}: tickets opened",
            tickets,
            Result(ref["tickets"], reference.seconds),
            unit="tickets/s",
            note=f"{got['tickets']:,} tickets, {result.count:,} commands in "
            f"{result.seconds:.0f} s (broker up: {ref['tickets']:,}, {reference.count:,} "
            f"in {reference.seconds:.0f} s)",
        )
        section.compare("  command latency", result, reference, metric="p50")
        section.compare(
            "  command latency",
            result,
            reference,
            metric="p99",
            note="every command appends; the ratio is the stall's measure",
        )
        section.add(
            "  command latency, max",
            got["max_seconds"] * 1000,
            ref["max_seconds"] * 1000,
            unit="ms",
            note="failed commands included",
        )
        section.add(f"  commands over {SLOW:.0f} s", got["slow"], ref["slow"])
        section.add(
            "  errors",
            result.errors,
            reference.errors,
            note=", ".join(f"{k}: {n}" for k, n in sorted(got["failed"].items())),
        )
        section.add("  deadlocks (pg_stat_database)", phase.deadlocks, up.deadlocks)
        section.add(
            "  repeat-repair flags written",
            phase.flags / result.seconds,
            up.flags / reference.seconds,
            unit="flags/s",
            note=f"{phase.flags:,} flags (broker up: {up.flags:,}): written by the "
            "projectors' reactor, so they kept applying",
        )
        section.add(
            "  longest idle in transaction",
            phase.idle_max,
            up.idle_max,
            unit="s",
            note=f"sampled every 0.5 s; oldest transaction seen idle: {phase.idle_xact_max:.1f} s "
            f"(broker up: {up.idle_xact_max:.1f} s)",
        )


async def bench_outage(
    report: Report, tmp: Path, args: Any, progress: Callable[[str], None]
) -> None:
    down = float(args.outage_seconds)
    seconds = {"up": down / 3, "down": down, "back": down / 3}
    section = report.section(
        f"Broker outage under load (scaled topology as processes, PostgreSQL; {CALLERS} "
        f"callers; broker up / stopped / back {down / 3:.0f} / {down:.0f} / {down / 3:.0f} s)",
        value_header="phase",
        reference_header="broker up",
    )
    progress("outage: starting PostgreSQL, the broker and the scaled topology")
    cluster = PostgresCluster()
    broker = TestBroker()
    topology: ScaledTopology | None = None
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE outage")
        broker.start()
        if report.machine.postgresql is None:
            report.machine.postgresql = await postgres_server_version(cluster.url("outage"))
        topology = await asyncio.to_thread(
            start_scaled_topology,
            tmp / "outage",
            cluster.url("outage"),
            broker.bootstrap_servers,
            extra_env={
                "TICKETLINE_AUTH_JWT_SECRET": TEST_JWT_SECRET,  # the callers' tokens
                "TICKETLINE_LOG_FORMAT": "json",
                "TICKETLINE_FEEDBACK_QUALITY_JOB_INTERVAL_SECONDS": "3600",
            },
        )
        dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/outage"
        phases, commands = await run_phases(topology, broker, dsn, seconds, progress)
    finally:
        if topology is not None:
            topology.stop()
        broker.stop()
        cluster.stop()
    report_rows(section, phases, commands)

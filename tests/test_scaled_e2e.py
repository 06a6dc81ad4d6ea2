"""The scaled topology as real OS processes on loopback: PostgreSQL, the Kafka-protocol test
broker, `ticketline migrate`, the four services (`ticketline serve`), two relays, two
projectors (`ticketline project --source kafka`) and the jobs (`ticketline jobs`, which
signs ledger checkpoints). Ticket lifecycles are driven over HTTP while faults land, each
under load: the relay holding the lease and one projector are SIGKILLed mid-publish, the
broker comes back empty (no topics, logs, groups or offsets), PostgreSQL restarts during
appends, and a service is SIGKILLed and started again. Callers retry what the faults cost
them (503 problems, refused connections) with the same Idempotency-Key. At the end every
acknowledged command's events are in the ledger and on Kafka, every projection applied
each stream exactly to its head and equals a rebuild (`ticketline replay`), every
service's /metrics reports an empty outbox and zero lag by the ledger's measure, the
checkpoints a subscriber got from the broker verify against the ledger, and the test
prints what it counted.

The lifecycles are lists of steps. Besides intake-only ones, tickets in the east run the
whole loop across the four services, each step in the role that owns it: dispatch
(suggested technician) → requisition and issue of the part → visit → repair under
warranty → old part returned (once the parts reactor, which runs in the projector
processes, expects it) → follow-up that closes the ticket, or reopens it and the
dispatcher sends the technician again.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, func, select

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.config import Settings
from shared.app.platform import Platform as SharedPlatform
from shared.app.registry import SERVICES, all_projections, all_reactors
from shared.eventstore.checkpoints import last_checkpoint
from shared.eventstore.kafka import ensure_topics, event_topics
from shared.eventstore.outbox import OutboxRelay
from shared.eventstore.tables import events, leases, projection_stream_versions
from shared.readmodels.ticket_state import ticket_state
from tests.support.auth import DEFAULT_ROLE_BY_SERVICE, headers_for
from tests.support.broker import TestBroker
from tests.support.dispatch_network import POINTS, hours
from tests.support.kafka import consume_all
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster
from tests.support.topology import Topology

pytestmark = pytest.mark.kafka

DEADLINE_SECONDS = 60  # every wait below is bounded by this


# --- the lifecycle, as steps ------------------------------------------------------------


@dataclass
class Ticket:
    index: int
    ticket_id: str = ""
    version: int = 0


@dataclass
class Platform:
    """HTTP clients on the running services, one per service, in its default role."""

    clients: dict[str, httpx.AsyncClient]
    # What the faults cost the callers: answers retried, by kind, and commands acknowledged.
    retried: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0

    async def _send(
        self, service: str, method: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """The request, again (same Idempotency-Key: one outcome) while the database or
        the service is away: a 503 problem, or no connection at all (a killed service)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            try:
                response = await self.clients[service].request(
                    method, path, headers=headers, **kwargs
                )
            except httpx.TransportError:
                kind = "no connection"
            else:
                if response.status_code != 503:
                    return response
                assert response.headers["content-type"].startswith("application/problem+json")
                assert "retry-after" in response.headers
                kind = "503"
            self.retried[kind] = self.retried.get(kind, 0) + 1
            assert time.monotonic() < deadline, f"{method} {path}: still {kind}"
            await asyncio.sleep(0.25)

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        as_: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A request in the service's default role, or as ``as_`` (the caller's headers).
        Every command carries an Idempotency-Key (derived from what it asks), so a retry
        after an outage has one outcome. An optimistic-concurrency loser without If-Match
        (several tickets race for one stock stream; the services retry a few times
        themselves) is tried again."""
        headers = {**(as_ or {}), **(headers or {})}
        if method != "GET" and "Idempotency-Key" not in headers:
            what = json.dumps([method, path, kwargs.get("json")], sort_keys=True)
            headers["Idempotency-Key"] = hashlib.sha256(what.encode()).hexdigest()[:40]
        for attempt in range(5):
            response = await self._send(service, method, path, headers, **kwargs)
            conflict = (
                response.status_code == 409
                and "If-Match" not in headers
                and response.json().get("rule") == "expected_version"
            )
            if not conflict or attempt == 4:
                break
            await asyncio.sleep(0.1 * (attempt + 1))
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        if method != "GET":
            self.acknowledged += 1
        return response.json()

    async def poll(
        self, what: str, fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]
    ) -> Any:
        """Bounded wait for something the projector processes do (reactors, read models)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            found = await fetch()
            if done(found):
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {found}"
            await asyncio.sleep(0.2)


# Who does what (tokens as tests/support/auth.py mints them; the processes share the key).
TECHNICIAN_ID = "t-a"
SERVICE_POINT = "sp-east-1"
PART = "MOTOR-WM700"


def admin() -> dict[str, str]:
    return headers_for("admin")


def technician() -> dict[str, str]:
    return headers_for("technician", subject=TECHNICIAN_ID)


def clerk() -> dict[str, str]:
    return headers_for("parts_clerk", location=SERVICE_POINT)


def auditor() -> dict[str, str]:
    return headers_for("auditor")


async def register_network_and_stock(p: Platform, stock: int) -> None:
    """Admin registers the service network on dispatch and the same locations and the part
    on parts; the clerk at the service point receives the stock the repairs will use."""
    for point in POINTS:
        await p.call("dispatch", "POST", "/service-points", json=point, as_=admin())
    await p.call(
        "dispatch",
        "POST",
        "/technicians",
        json={
            "id": TECHNICIAN_ID,
            "name": "A",
            "service_point_id": SERVICE_POINT,
            "skills": ["washing_machines"],
            "working_hours": hours(
                ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00", "23:59"
            ),
        },
        as_=admin(),
    )
    for location_id, body in {
        "hq": {"name": "HQ", "level": "headquarters"},
        "rc-east": {"name": "East RC", "level": "regional_center", "parent_id": "hq"},
        SERVICE_POINT: {"name": "East outlet", "level": "service_point", "parent_id": "rc-east"},
    }.items():
        if body["level"] != "headquarters":
            body = {**body, "region": "east"}
        await p.call("parts", "PUT", f"/locations/{location_id}", json=body, as_=admin())
    await p.call(
        "parts",
        "PUT",
        f"/parts/{PART}",
        json={"name": "Drum motor", "fits_models": ["WM-700"], "unit_cost": 86.5},
        as_=admin(),
    )
    await p.call(
        "parts",
        "POST",
        "/stock/receipts",
        json={"part_number": PART, "quantity": stock},
        as_=clerk(),
    )


Step = Callable[[Platform, Ticket], Awaitable[None]]


async def receive(p: Platform, t: Ticket, region: str | None = None) -> None:
    body = copy.deepcopy(RECEIVE_EXAMPLE)  # product line washing_machines, model WM-700
    body["product"]["serial_number"] = f"SN-E2E-{t.index:04d}"  # unique: no repeat repairs
    body["customer"]["phone"] = f"139{t.index:08d}"
    body["address"]["region"] = region or ("east", "west", "north")[t.index % 3]
    data = await p.call(
        "intake", "POST", "/tickets", json=body, headers={"Idempotency-Key": f"e2e-{t.index}"}
    )
    t.ticket_id, t.version = data["ticket_id"], data["version"]


async def correct_contact(p: Platform, t: Ticket) -> None:
    data = await p.call(
        "intake",
        "PATCH",
        f"/tickets/{t.ticket_id}/contact",
        json={"customer": {"name": "Li Wei", "phone": f"137{t.index:08d}"}, "reason": "new"},
        headers={"If-Match": f'"{t.version}"'},
    )
    t.version = data["version"]


async def diagnose_remote_fixed(p: Platform, t: Ticket) -> None:
    data = await p.call(
        "intake",
        "POST",
        f"/tickets/{t.ticket_id}/diagnosis",
        json={
            "category": "misuse",
            "complexity": "simple",
            "resolution_path": "remote_guidance",
            "remote_outcome": "fixed",
        },
    )
    assert data["status"] == "repaired"
    t.version = data["version"]


async def diagnose_on_site(p: Platform, t: Ticket) -> None:
    data = await p.call(
        "intake",
        "POST",
        f"/tickets/{t.ticket_id}/diagnosis",
        json={
            "category": "quality_defect",
            "complexity": "general",
            "resolution_path": "on_site",
            "expected_parts": ["MOTOR-WM700"],
        },
    )
    t.version = data["version"]


async def dispatch(p: Platform, t: Ticket) -> None:
    """The dispatcher lets the service suggest: the only skilled technician in the east."""
    data = await p.call("dispatch", "POST", f"/tickets/{t.ticket_id}/dispatch", json={})
    assert (data["technician_id"], data["service_point_id"]) == (TECHNICIAN_ID, SERVICE_POINT)


async def redispatch(p: Platform, t: Ticket) -> None:
    data = await p.call(
        "dispatch",
        "POST",
        f"/tickets/{t.ticket_id}/dispatch",
        json={"reason": "customer not satisfied: send the technician again"},
    )
    assert data["technician_id"] == TECHNICIAN_ID
    assert data["redispatch"] is True


async def requisition_and_issue(p: Platform, t: Ticket) -> None:
    """The technician asks for the part; the clerk at the service point hands it over."""
    requisition = await p.call(
        "parts",
        "POST",
        "/requisitions",
        json={"ticket_id": t.ticket_id, "part_number": PART},
        as_=technician(),
    )
    assert requisition["source_location_id"] == SERVICE_POINT
    issued = await p.call(
        "parts",
        "POST",
        f"/requisitions/{requisition['requisition_id']}/issue",
        json={},
        as_=clerk(),
    )
    assert issued["status"] == "issued"


async def visit(p: Platform, t: Ticket) -> None:
    await p.call(
        "dispatch",
        "POST",
        f"/tickets/{t.ticket_id}/visit",
        json={"findings": "motor burnt out"},
        as_=technician(),
    )


async def repair(p: Platform, t: Ticket) -> None:
    await p.call(
        "dispatch",
        "POST",
        f"/tickets/{t.ticket_id}/repair",
        json={
            "outcome": "replaced",
            "parts_used": [
                {
                    "part_number": PART,
                    "new_serial": f"M-NEW-{t.index}",
                    "old_serial": f"M-OLD-{t.index}",
                    "under_warranty": True,
                }
            ],
            "labour_minutes": 50,
        },
        as_=technician(),
    )


async def return_old_part(p: Platform, t: Ticket) -> None:
    """Only once the parts reactor (in a projector process) consumed the repair."""
    await p.poll(
        f"the expected return of {t.ticket_id}",
        lambda: p.call("parts", "GET", "/returns", params={"ticket_id": t.ticket_id}, as_=clerk()),
        lambda rows: any(r["status"] == "expected" for r in rows),
    )
    returned = await p.call(
        "parts",
        "POST",
        "/returns",
        json={"ticket_id": t.ticket_id, "part_number": PART, "old_serial": f"M-OLD-{t.index}"},
        as_=clerk(),
    )
    assert (returned["status"], returned["late"]) == ("returned", False)


async def follow_up(p: Platform, t: Ticket, *, satisfied: bool) -> None:
    data = await p.call(
        "feedback",
        "POST",
        f"/tickets/{t.ticket_id}/follow-ups",
        json={
            "satisfaction_score": 96 if satisfied else 30,
            "would_recommend": 10 if satisfied else 2,
            "problem_solved": satisfied,
            "channel": "call",
        },
    )
    assert data["status"] == ("closed" if satisfied else "reopened"), data


ON_SITE_REPAIR: list[Step] = [
    partial(receive, region="east"),
    diagnose_on_site,
    dispatch,
    requisition_and_issue,
    visit,
    repair,
    return_old_part,
]


@dataclass
class Lifecycle:
    name: str
    steps: list[Step]
    final_status: str
    closed_loop: bool = False  # the compliance view must show it compliant


LIFECYCLES = [
    Lifecycle("remote guidance", [receive, diagnose_remote_fixed], "repaired"),
    Lifecycle("on site", [receive, correct_contact, diagnose_on_site], "diagnosed"),
    Lifecycle(
        "closed loop",
        [*ON_SITE_REPAIR, partial(follow_up, satisfied=True)],
        "closed",
        closed_loop=True,
    ),
    Lifecycle(
        "reopened", [*ON_SITE_REPAIR, partial(follow_up, satisfied=False), redispatch], "dispatched"
    ),
]


async def drive(p: Platform, tickets: list[tuple[Lifecycle, Ticket]]) -> None:
    """All tickets advance step by step, concurrently, so processes see interleaved load."""

    async def one(lifecycle: Lifecycle, ticket: Ticket) -> None:
        for step in lifecycle.steps:
            await step(p, ticket)

    await asyncio.gather(*(one(lc, t) for lc, t in tickets))


# --- processes --------------------------------------------------------------------------


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], topology: Topology) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for name, process in topology.processes.items():
            if name not in topology.killed and process.poll() is not None:
                raise AssertionError(f"{name} exited early\n{topology.log_tail()}")
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{topology.log_tail()}")


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- the test ---------------------------------------------------------------------------


async def test_scaled_topology_survives_faults_under_load(
    pg_cluster: PostgresCluster, broker: TestBroker, tmp_path: Path
) -> None:
    database = f"scaled_{uuid.uuid4().hex[:10]}"
    pg_cluster.psql(f'CREATE DATABASE "{database}"')
    # A password as deployments have one (the throwaway cluster trusts loopback): never shown.
    url = pg_cluster.url(database).replace("//postgres@", "//postgres:not-to-be-shown@")
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "TICKETLINE_KAFKA_ENABLE_IDEMPOTENCE": "false",  # the test broker lacks it
        "TICKETLINE_DATA_DIR": str(tmp_path / "data"),
        "TICKETLINE_KAFKA_TOPIC_PARTITIONS": "4",
        "TICKETLINE_RELAY_LEASE_SECONDS": "2",  # a standby takes over quickly
        "TICKETLINE_RELAY_POLL_SECONDS": "0.1",
        "TICKETLINE_RELAY_BATCH_SIZE": "5",  # many batches: the kill lands mid-stream
        "TICKETLINE_PROJECTOR_BATCH_SIZE": "5",
        "TICKETLINE_LOG_FORMAT": "json",
        # The ledger's measure: projectors check every half second and stop waiting for
        # the broker after 3 s; the relay compares the topics with what it published.
        "TICKETLINE_PROJECTOR_LEDGER_CHECK_SECONDS": "0.5",
        "TICKETLINE_PROJECTOR_LEDGER_GRACE_SECONDS": "3",
        "TICKETLINE_RELAY_TOPIC_CHECK_SECONDS": "1",
        "TICKETLINE_CHECKPOINT_INTERVAL_SECONDS": "2",
        # No quality alert lands in the middle of the final checks.
        "TICKETLINE_FEEDBACK_QUALITY_JOB_INTERVAL_SECONDS": "3600",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    topology = Topology(env, logs)
    # For the database and the reactors' names (reactors are built on a platform).
    shared = SharedPlatform.from_settings(Settings(database_url=url))
    db = shared.db
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        # Services refuse an outdated schema; migrate is safe to run twice.
        refused = topology.run("serve", "intake", "--port", str(ports["intake"]))
        assert refused.returncode != 0
        assert "run `ticketline migrate` first" in refused.stderr + refused.stdout
        for _ in range(2):
            migrated = topology.run("migrate")
            assert migrated.returncode == 0, migrated.stderr
            assert "not-to-be-shown" not in migrated.stdout + migrated.stderr
            assert "postgres:***@" in migrated.stdout

        for name, port in ports.items():
            topology.start(name, "serve", name, "--port", str(port))
        metrics_ports: dict[str, int] = {}
        for n in (1, 2):
            for name, args in ((f"relay-{n}", ["relay"]), (f"projector-{n}", ["project"])):
                metrics_ports[name] = free_port()
                topology.start(
                    name,
                    *args,
                    *(["--source", "kafka"] if name.startswith("projector") else []),
                    TICKETLINE_METRICS_PORT=str(metrics_ports[name]),
                )
        topology.start("jobs", "jobs")

        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name in SERVICES:
            clients[name] = httpx.AsyncClient(
                base_url=base[name],
                headers=headers_for(DEFAULT_ROLE_BY_SERVICE[name]),
                timeout=15,
            )
        platform = Platform(clients)

        async def all_ready() -> bool:
            try:
                answers = [await c.get("/health/ready") for c in clients.values()]
            except httpx.TransportError:
                return False
            return all(a.status_code == 200 for a in answers)

        await wait_until("every service ready", all_ready, topology)
        for client in clients.values():
            assert (await client.get("/health/live")).status_code == 200
        await register_network_and_stock(platform, stock=80)

        tickets: list[tuple[Lifecycle, Ticket]] = []

        def new_tickets(count: int) -> list[tuple[Lifecycle, Ticket]]:
            batch = [
                (LIFECYCLES[(len(tickets) + i) % len(LIFECYCLES)], Ticket(len(tickets) + i))
                for i in range(count)
            ]
            tickets.extend(batch)
            return batch

        await drive(platform, new_tickets(8))

        # Kill the relay that holds the lease (the one publishing) and one projector.
        lease_owner = select(leases.c.owner).where(leases.c.name == OutboxRelay.LEASE_NAME)

        async def leader_known() -> bool:
            return await db.read(lambda c: c.execute(lease_owner).scalar()) is not None

        await wait_until("a relay leader", leader_known, topology)
        owner = await db.read(lambda c: c.execute(lease_owner).scalar_one())
        leader_pid = int(owner.rsplit(":", 2)[1])  # host:pid:suffix
        leader = next(n for n, p in topology.processes.items() if p.pid == leader_pid)
        assert leader.startswith("relay-")
        second_batch = asyncio.create_task(drive(platform, new_tickets(8)))
        await asyncio.sleep(0.3)  # mid-run: writes are flowing
        topology.kill(leader)
        topology.kill("projector-1")
        await second_batch
        await drive(platform, new_tickets(6))  # keep writing after the loss
        faults = [f"relay {leader} (the publishing one) and projector-1 killed mid-publish"]

        async def under_load(fault: Callable[[], Awaitable[None]], what: str) -> None:
            batch = asyncio.create_task(drive(platform, new_tickets(8)))
            await asyncio.sleep(0.3)  # mid-run: writes are flowing
            await fault()
            await batch
            faults.append(what)

        async def broker_empty() -> None:
            # The cluster comes back empty with its topics (as an operator rebuilds it):
            # the test broker would take a produce to a topic it does not have yet and
            # fail that topic's later writes, which Apache Kafka never does.
            with topology.paused(("relay-", "projector-")):
                broker.restart_empty()
                await ensure_topics(
                    broker.bootstrap_servers,
                    event_topics("ticketline"),
                    partitions=int(topology.env["TICKETLINE_KAFKA_TOPIC_PARTITIONS"]),
                )

        async def postgres_restart() -> None:
            await asyncio.to_thread(pg_cluster.restart, mode="fast", down_seconds=1.0)

        async def service_killed() -> None:
            topology.kill("dispatch")
            topology.start("dispatch-again", "serve", "dispatch", "--port", str(ports["dispatch"]))

        await under_load(broker_empty, "broker restarted empty")
        await under_load(postgres_restart, "PostgreSQL restarted during appends")
        await under_load(service_killed, "dispatch killed and started again")
        await drive(platform, new_tickets(4))  # and on after every fault

        # Every event reaches Kafka, the read models and the metrics settle at zero. The
        # reactors (parts_repair_reactor, dispatch_repeat_repair) run in the projector
        # processes like projections: the same lag, per-stream versions and consumer group.
        reactors = all_reactors(shared)
        assert {"parts_repair_reactor", "dispatch_repeat_repair"} <= set(reactors)
        projections = {**all_projections(), **reactors}

        async def settled() -> bool:
            # The checkpoint job has signed the ledger as it ends: nothing appends anymore.
            last = await db.read(last_checkpoint)
            if last is None or last.position != await db.read(shared.store.last_position):
                return False
            for client in clients.values():
                found = metric_values((await client.get("/metrics")).text)
                if found[("ticketline_outbox_backlog", ())] != 0:
                    return False
                for name in projections:
                    if found[("ticketline_projection_lag", (("projection", name),))] != 0:
                        return False
            return True

        await wait_until("backlog 0 and lag 0 on every service", settled, topology)
        found = metric_values((await clients["intake"].get("/metrics")).text)
        assert found[("ticketline_outbox_oldest_unpublished_age_seconds", ())] == 0

        def ledger_and_read_models(conn: Connection) -> tuple:  # type: ignore[type-arg]
            heads = {
                r.stream_id: (r.stream_type, r.head)
                for r in conn.execute(
                    select(
                        events.c.stream_id,
                        events.c.stream_type,
                        func.max(events.c.stream_version).label("head"),
                    ).group_by(events.c.stream_id, events.c.stream_type)
                )
            }
            ledger = {
                (r.stream_id, r.stream_version)
                for r in conn.execute(select(events.c.stream_id, events.c.stream_version))
            }
            states = {
                r.ticket_id: (r.version, r.status)
                for r in conn.execute(
                    select(ticket_state.c.ticket_id, ticket_state.c.version, ticket_state.c.status)
                )
            }
            applied = {
                (r.projection, r.stream_id): r.version
                for r in conn.execute(select(projection_stream_versions))
            }
            return heads, ledger, states, applied

        heads, ledger, states, applied = await db.read(ledger_and_read_models)
        assert len(tickets) == 22 + 3 * 8 + 4
        assert {sid for sid, (kind, _) in heads.items() if kind == "ticket"} == {
            t.ticket_id for _, t in tickets
        }
        # ticket_state equals the ledger: one row per ticket at the stream's head version.
        assert states == {
            t.ticket_id: (heads[t.ticket_id][1], lc.final_status) for lc, t in tickets
        }
        # Every projection applied every stream of its types exactly up to the head.
        for name, projection in projections.items():
            expected = {
                sid: head for sid, (kind, head) in heads.items() if kind in projection.stream_types
            }
            got = {sid: v for (p, sid), v in applied.items() if p == name}
            assert got == expected, name
        # Every ledger event is on Kafka (a relay killed mid-batch may have sent some twice).
        # A topic nobody wrote to since the broker came back empty (the service network's
        # locations) is found lost at the relay's next topic check, then published again.
        on_kafka: set[tuple[str, int]] = set()

        async def all_on_kafka() -> bool:
            on_kafka.clear()
            for topic in event_topics("ticketline"):
                messages = await consume_all(broker.bootstrap_servers, topic, idle_ms=500)
                on_kafka.update((m["stream_id"], m["stream_version"]) for m in messages)
            return on_kafka == ledger

        await wait_until("every ledger event on Kafka", all_on_kafka, topology)
        assert on_kafka == ledger

        # Each projection's consumer group commits the end of every partition: some
        # instance processed (and committed after its transaction) every message — also
        # on the partitions the killed projector held, once the group rebalanced.
        async def groups_at_end() -> bool:
            return await consumer_groups_at_end(broker.bootstrap_servers, projections)

        await wait_until("every consumer group at the end", groups_at_end, topology)
        for lifecycle, ticket in tickets:
            view = (await clients["intake"].get(f"/tickets/{ticket.ticket_id}")).json()
            assert view["status"] == lifecycle.final_status

        # The closed loop, as the auditor sees it (the compliance view the projectors built):
        # closed tickets compliant, reopened ones not satisfied.
        looped = [(lc, t) for lc, t in tickets if lc.final_status in ("closed", "dispatched")]
        assert {lc.final_status for lc, _ in looped} == {"closed", "dispatched"}
        for lifecycle, ticket in looped:
            view = await platform.poll(
                f"the compliance view of {ticket.ticket_id}",
                lambda t=ticket: platform.call(
                    "feedback", "GET", f"/compliance/tickets/{t.ticket_id}", as_=auditor()
                ),
                lambda v, lc=lifecycle: (
                    v["checklist"]["follow_up_done"]["status"] == "true"
                    and (v["compliant"] == "true" or not lc.closed_loop)
                ),
            )
            assert (view["service_point_id"], view["technician_id"]) == (
                SERVICE_POINT,
                TECHNICIAN_ID,
            )
            assert view["checklist"]["parts_returned"]["status"] == "true"
            if lifecycle.closed_loop:
                failing = {k: v for k, v in view["checklist"].items() if v["status"] != "true"}
                assert failing == {}
            else:
                assert view["checklist"]["satisfied"]["status"] == "false"
                assert view["compliant"] == "false"

        # The survivors took over: the standby relay published, the other projector
        # received every ticket event (applied, or skipped as already applied inline).
        survivor = next(n for n in ("relay-1", "relay-2") if n != leader)
        async with httpx.AsyncClient() as http:
            relay_text = (await http.get(f"http://127.0.0.1:{metrics_ports[survivor]}/")).text
            projector_text = (
                await http.get(f"http://127.0.0.1:{metrics_ports['projector-2']}/")
            ).text
        assert metric_values(relay_text)[("ticketline_relay_published_total", ())] > 0
        seen = metric_values(projector_text)
        label = (("projection", "ticket_state"),)
        assert (
            seen[("ticketline_projection_events_applied_total", label)]
            + seen[("ticketline_projection_events_skipped_total", label)]
            > 0
        )
        # Exactly once in effect: every read model equals a rebuild from the ledger.
        rebuilt = topology.run("replay", "--quiet")
        assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-2000:]
        replay_summary = json.loads(rebuilt.stdout.splitlines()[-1])
        assert replay_summary["identical_to_live"] is True
        # The checkpoints a regional center kept from the broker verify against the ledger.
        kept = tmp_path / "checkpoints.jsonl"
        held = await consume_all(broker.bootstrap_servers, "ticketline.ledger", idle_ms=1000)
        kept.write_text(
            "".join(
                json.dumps({k: v for k, v in m.items() if not k.startswith("_")}) + "\n"
                for m in held
            )
        )
        checked = topology.run("verify", "--checkpoints", str(kept))
        assert checked.returncode == 0, checked.stdout[-3000:]
        verified = json.loads(checked.stdout)
        assert verified["checkpoints_checked"] >= 3 and verified["checkpoint_file_problems"] == []
        parked = metric_values((await clients["intake"].get("/metrics")).text)
        assert all(
            value == 0
            for (metric, _), value in parked.items()
            if metric == "ticketline_parked_events"
        )
        # What the faults cost the callers, and what the test counted.
        assert platform.retried.get("503", 0) > 0, platform.retried  # PostgreSQL away
        assert platform.retried.get("no connection", 0) > 0, platform.retried  # dispatch away
        summary = {
            "faults": faults,
            "tickets": len(tickets),
            "commands_acknowledged": platform.acknowledged,
            "answers_retried": platform.retried,
            "events_in_ledger": len(ledger),
            "events_on_kafka": len(on_kafka),
            "projections_at_head": {
                name: sum(1 for (p, _) in applied if p == name) for name in sorted(projections)
            },
            "lag_by_the_ledger": 0,
            "parked": 0,
            "replay_identical_to_live": replay_summary["identical_to_live"],
            "replayed_events": replay_summary["events"],
            "checkpoints_verified": verified["checkpoints_checked"],
        }
        print("scaled faults:", json.dumps(summary, sort_keys=True))
        # Structured logs: one JSON object per line, with the process and correlation ids.
        lines = [json.loads(line) for line in (logs / "intake.log").read_text().splitlines()]
        assert lines and all(line["service"] == "intake" for line in lines)
        assert any(line.get("correlation_id") and line.get("route") for line in lines)
    finally:
        for client in clients.values():
            await client.aclose()
        topology.stop()
        await shared.close()


async def consumer_groups_at_end(bootstrap_servers: str, projections: dict[str, Any]) -> bool:
    from shared.kernel.events.registry import topic_for

    for name, projection in projections.items():
        topics = sorted({topic_for(t, "ticketline") for t in projection.stream_types})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=f"ticketline.{name}",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            await consumer.topics()  # load the metadata
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
            assert partitions, name
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                # ">=": the test broker may report the end one short of the next offset.
                if (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
        finally:
            await consumer.stop()
    return True

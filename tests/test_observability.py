"""Operations: /metrics, correlation ids, JSON logs and /health/ready with a broker."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.config import Settings
from shared.app.observability import JsonFormatter, correlation_var
from shared.app.platform import Platform
from shared.eventstore.db import Database
from shared.eventstore.ledger import NO_STREAM, EventStore
from shared.eventstore.progress import LedgerGuard
from shared.eventstore.runner import KafkaSource, ProjectionRunner, read_checkpoint
from shared.kernel.clock import ManualClock
from shared.readmodels.ticket_state import TicketStateProjection
from tests.support.broker import TestBroker
from tests.support.clients import service_client
from tests.support.factories import context, received
from tests.support.kafka import relay_all
from tests.support.ports import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def appended(event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "ticketline_events_appended_total", {"service": "intake", "event_type": event_type}
    )
    return value or 0.0


async def test_metrics_report_latency_events_backlog_and_lag(
    intake: httpx.AsyncClient, platform: Platform, clock: ManualClock
) -> None:
    before = appended("TicketReceived")
    created = await intake.post("/tickets", json=RECEIVE_EXAMPLE)
    assert created.status_code == 201
    await intake.get(f"/tickets/{created.json()['ticket_id']}")
    assert appended("TicketReceived") == before + 1

    clock.advance(hours=1)
    response = await intake.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    # Route templates, never raw paths (ticket ids would explode the series).
    routes = {dict(k[1]).get("route") for k in found if k[0].startswith("ticketline_http")}
    assert {"/tickets", "/tickets/{ticket_id}"} <= routes
    assert not any(r and created.json()["ticket_id"] in r for r in routes)
    # Refused before routing (a body above the limit): still its route's; a path no route
    # has: one label for all of them.
    too_big = await intake.post("/tickets", content=b"[" + b" " * (2 << 20) + b"]")
    assert too_big.status_code == 413
    assert (await intake.get("/no/such/path")).status_code == 404
    found = samples((await intake.get("/metrics")).text)
    statuses = {
        (dict(k[1])["route"], dict(k[1])["status"])
        for k in found
        if k[0] == "ticketline_http_request_duration_seconds_count"
    }
    assert {("/tickets", "413"), ("unmatched", "404")} <= statuses
    assert found[("ticketline_outbox_backlog", ())] == 1
    assert found[("ticketline_outbox_oldest_unpublished_age_seconds", ())] == 3600
    # ticket_state is applied inline; the asynchronous projector has not run yet.
    assert found[("ticketline_projection_lag", (("projection", "ticket_state"),))] == 1

    await platform.runner.catch_up(TicketStateProjection())
    found = samples((await intake.get("/metrics")).text)
    assert found[("ticketline_projection_lag", (("projection", "ticket_state"),))] == 0


async def test_rolled_back_append_is_not_counted(db: Database, store: EventStore) -> None:
    before = REGISTRY.get_sample_value(
        "ticketline_events_appended_total", {"service": "intake", "event_type": "TicketReceived"}
    )

    def fails(conn: Connection) -> None:
        store.append_to_stream(conn, "t-rollback", NO_STREAM, [received()], context())
        raise RuntimeError("the command failed after appending")

    with pytest.raises(RuntimeError):
        await db.write(fails)
    after = REGISTRY.get_sample_value(
        "ticketline_events_appended_total", {"service": "intake", "event_type": "TicketReceived"}
    )
    assert after == before


async def test_correlation_id_reaches_the_events_and_the_response(
    intake: httpx.AsyncClient,
) -> None:
    created = await intake.post("/tickets", json=RECEIVE_EXAMPLE)
    cid = created.headers["x-correlation-id"]  # generated: none was sent
    history = (await intake.get(f"/tickets/{created.json()['ticket_id']}/history")).json()
    assert history["events"][0]["correlation_id"] == cid

    given = "6f1c2a9e-0d4b-4c1e-9a53-2f7e8b1d0c44"
    again = await intake.post(
        "/tickets",
        json={**RECEIVE_EXAMPLE, "product": {**RECEIVE_EXAMPLE["product"], "serial_number": "X"}},
        headers={"X-Correlation-ID": given},
    )
    assert again.headers["x-correlation-id"] == given
    history = (await intake.get(f"/tickets/{again.json()['ticket_id']}/history")).json()
    assert history["events"][0]["correlation_id"] == given


def test_json_log_lines_carry_service_and_correlation_id() -> None:
    formatter = JsonFormatter("intake")
    record = logging.LogRecord(
        "ticketline.http", logging.INFO, __file__, 1, "GET %s", ("/x",), None
    )
    record.route = "/x"
    token = correlation_var.set("abc")
    try:
        line = json.loads(formatter.format(record))
    finally:
        correlation_var.reset(token)
    assert line["message"] == "GET /x"
    assert line["service"] == "intake" and line["correlation_id"] == "abc"
    assert line["level"] == "INFO" and line["logger"] == "ticketline.http"
    assert line["route"] == "/x" and line["time"].endswith("+00:00")


@pytest.mark.kafka
@pytest.mark.parametrize("backend", ["postgres"])
async def test_ready_needs_the_broker_in_scaled_mode(
    database_url: str, broker: TestBroker, tmp_path: Path
) -> None:
    down = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        ready_broker_timeout_seconds=1.0,
    )
    up = Settings(database_url=database_url, kafka_bootstrap_servers=broker.bootstrap_servers)
    answers = []
    for settings in (down, up):
        platform = Platform.from_settings(settings)
        try:
            async with service_client("intake", platform) as client:
                answers.append(await client.get("/health/ready"))
        finally:
            await platform.close()
    assert answers[0].status_code == 503
    assert "broker unreachable" in answers[0].json()["detail"]
    assert answers[1].status_code == 200, answers[1].text


@pytest.mark.kafka
@pytest.mark.parametrize("backend", ["postgres"])
async def test_kafka_projector_records_its_applied_position_in_ledger_terms(
    db: Database, store: EventStore, broker: TestBroker
) -> None:
    for n in range(3):
        await db.write(
            lambda c, n=n: store.append_to_stream(c, f"t-{n}", NO_STREAM, [received(n)], context())
        )
    await relay_all(db, broker.bootstrap_servers)
    # Recorded after the relay ran: in the ledger, never on the broker.
    await db.write(lambda c: store.append_to_stream(c, "t-3", NO_STREAM, [received(3)], context()))
    runner = ProjectionRunner(db, store)

    # The broker delivered positions 1-3: everything up to 3 is applied, 4 is not (the
    # highest offset the broker knows says nothing about it).
    patient = LedgerGuard(db, store, grace_seconds=3600)
    kafka = KafkaSource(
        broker.bootstrap_servers,
        topic_prefix="ticketline",
        group_prefix="cp",
        idle_stop_after_ms=1000,
        guard=patient,
    )
    await runner.run(TicketStateProjection(), kafka)
    assert await db.read(lambda c: read_checkpoint(c, "ticket_state")) == 3
    assert patient.missing == 4
    # Past the grace period the projector applies it from the ledger itself.
    impatient, projection = LedgerGuard(db, store, grace_seconds=0), TicketStateProjection()
    fill = await impatient.check(projection)
    assert [e.position for e in fill] == [4]
    await db.write(lambda c: runner.apply(c, projection, fill))
    assert await impatient.check(projection) == []
    assert await db.read(lambda c: read_checkpoint(c, "ticket_state")) == 4


def test_a_broker_away_logs_each_aiokafka_message_once_per_interval() -> None:
    """Reconnect attempts are logged tens of times a second per consumer while the broker is
    away; the handler lets one of each through per interval, and every other logger's."""
    import logging

    from shared.app.observability import BrokerLogThrottle

    now = [0.0]
    throttle = BrokerLogThrottle(seconds=10.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("111", "refused"), None)

    unable = "Unable connect to node with id %s: %s"
    passed = [throttle.filter(record("aiokafka.conn", unable)) for _ in range(50)]
    assert passed.count(True) == 1
    assert throttle.filter(record("aiokafka.conn", "Another message %s %s"))
    assert all(throttle.filter(record("ticketline.http", unable)) for _ in range(3))
    now[0] = 10.5
    assert throttle.filter(record("aiokafka.conn", unable))  # the next interval: once again


def test_a_projector_logs_a_database_outage_once_a_while_and_other_failures_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A projector restarts every second: an outage gave a traceback at ERROR each time
    (52 in an 8-second PostgreSQL restart, per projection)."""
    from shared.app.jobs import FailureReport
    from shared.eventstore.db import DatabaseUnavailable

    failures = FailureReport("projector ticket_state")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            failures.report(DatabaseUnavailable("the database is unavailable: disk full"))
        failures.report(ValueError("a bug"))
    outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in outage] == [("WARNING", None)]
    (bug,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert bug.exc_info is not None and "restarting in 1 s" in bug.getMessage()


async def test_a_job_logs_a_database_outage_as_a_warning_not_a_traceback(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """`ticketline jobs` during a PostgreSQL restart: one warning, as the relay and the
    projectors give, not an ERROR with a 60-line traceback at every pass."""
    import asyncio

    from shared.app.jobs import run_leased
    from shared.eventstore.db import DatabaseUnavailable
    from shared.eventstore.leases import Lease

    stop = asyncio.Event()
    passes = 0

    async def one_pass() -> None:
        nonlocal passes
        passes += 1
        if passes == 3:
            stop.set()
        raise DatabaseUnavailable("the database is unavailable: ConnectionRefusedError")

    lease = Lease(platform.db, "job:test", "me", 60.0, platform.clock)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(run_leased(lease, stop, 0.01, one_pass), 10)
    said = [(r.levelname, r.exc_info, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            None,
            "job job:test: the database is unavailable (the database is unavailable: "
            "ConnectionRefusedError); trying again at the next interval",
        )
    ]


async def test_a_projector_that_ignores_the_stop_is_cancelled_after_its_grace() -> None:
    """A Kafka consumer waiting on a broker that went away ignored SIGTERM for minutes."""
    import asyncio

    from shared.app.runtime import finish_when_stopped

    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = asyncio.create_task(finish_when_stopped(stubborn(), stop, grace=0.2))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert cancelled.is_set()

    async def fails() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await finish_when_stopped(fails(), asyncio.Event())

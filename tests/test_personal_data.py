"""Personal data (docs/personal-data.md): sealed at the store, shown only through the APIs
to roles that may see it (and logged), erased by destroying a key — after which no byte
of the customer's clear data is anywhere, and the ledger still verifies."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import orjson
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from services.intake.read_models import get_ticket_row
from services.intake.schemas import ReceiveTicketRequest
from shared.app.audit import render, select_events, signing_key, summarise, verify_export
from shared.app.platform import Platform
from shared.app.registry import all_projections
from shared.app.replay import replay
from shared.eventstore.kafka import ensure_topics, event_topics
from shared.eventstore.personal.tables import personal_data_keys
from shared.eventstore.verify import verify_ledger
from shared.http.streams import format_sse
from shared.kernel.clock import ManualClock
from shared.kernel.personal import ERASED
from tests.support.broker import TestBroker
from tests.support.clients import service_client
from tests.support.kafka import consume_all, relay_all
from tests.support.lifecycle import Lifecycle
from tests.support.postgres import PostgresCluster
from tests.support.privacy import (
    Person,
    found_in,
    found_in_tree,
    sqlite_files_after_vacuum,
)
from tests.test_intake import body

FOLLOW_UP = {"satisfaction_score": 95, "would_recommend": 9, "problem_solved": True}


@dataclass
class Customer:
    person: Person
    tickets: list[str] = field(default_factory=list)
    customer_id: str = ""


async def open_for(intake: httpx.AsyncClient, person: Person, serial: str) -> str:
    response = await intake.post("/tickets", json=person.body(serial))
    assert response.status_code == 201, response.text
    return str(response.json()["ticket_id"])


async def close_ticket(
    life: Lifecycle, feedback: httpx.AsyncClient, ticket_id: str, comment: str | None = None
) -> None:
    await life.through_repair(ticket_id)
    body = {**FOLLOW_UP, "channel": "call", **({"comment": comment} if comment else {})}
    response = await feedback.post(f"/tickets/{ticket_id}/follow-ups", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "closed"


async def customer_with_history(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> Customer:
    """Two tickets, both closed: a complaint, a corrected phone, a follow-up comment."""
    customer = Customer(person)
    first = await open_for(intake, person, f"SN-{uuid4().hex[:12]}")
    second = await open_for(intake, person, f"SN-{uuid4().hex[:12]}")
    customer.tickets = [first, second]
    complaint = {"complaint": person.complaint, "channel": "phone"}
    assert (await feedback.post(f"/tickets/{first}/complaints", json=complaint)).status_code == 201
    async with service_client("intake", platform, role="dispatcher", subject="disp-1") as disp:
        correction = {"customer": {"name": person.name, "phone": person.new_phone}, "reason": "new"}
        response = await disp.patch(f"/tickets/{second}/contact", json=correction)
        assert response.status_code == 200, response.text
    await close_ticket(life, feedback, first, person.comment)
    await close_ticket(life, feedback, second)
    customer.customer_id = await customer_of(platform, first)
    return customer


async def relay_to(platform: Platform, broker: TestBroker) -> list[dict[str, Any]]:
    await ensure_topics(broker.bootstrap_servers, event_topics("ticketline"), partitions=1)
    # The same owner each time: it holds the relay's lease.
    await relay_all(platform.db, broker.bootstrap_servers, batch_size=1000, owner="privacy-test")
    messages: list[dict[str, Any]] = []
    for topic in ("ticketline.tickets", "ticketline.customers"):
        assert topic in event_topics("ticketline")
        messages += await consume_all(broker.bootstrap_servers, topic)
    return messages


async def export_and_verify(platform: Platform) -> bytes:
    key = signing_key(platform.settings)
    envelopes = await platform.db.read(select_events)
    data = render(envelopes, "jsonl")
    summary = summarise(data, envelopes, "jsonl", {}, key)
    check = await platform.db.read(lambda c: verify_export(data, summary, key, c, platform.store))
    assert check.ok, check.problems
    report = await platform.db.read(lambda c: verify_ledger(c, platform.store))
    assert report.ok, report.broken
    return data


async def api_answers(platform: Platform, customer: Customer) -> bytes:
    """What every reader gets about the customer's tickets, as bytes."""
    out: list[bytes] = []
    first = customer.tickets[0]
    for role in ("dispatcher", "admin", "call_center_agent", "auditor"):
        async with service_client("intake", platform, role=role) as client:
            for path in (f"/tickets/{first}", f"/tickets/{first}/history", "/tickets"):
                response = await client.get(path)
                assert response.status_code == 200, (role, path, response.text)
                out.append(response.content)
        async with service_client("dispatch", platform, role=role) as client:
            out.append((await client.get(f"/tickets/{first}/dispatches")).content)
    async with service_client("intake", platform, role="auditor") as auditor:
        out.append((await auditor.get("/audit/export")).content)
    events = await platform.db.read(lambda c: platform.store.read_all(c))
    out += [format_sse(e).encode() for e in events]
    return b"\n".join(out)


@pytest.fixture
def person() -> Person:
    return Person.make()


async def test_erasure_leaves_no_clear_byte_and_the_ledger_verifies(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    broker: TestBroker,
    backend: str,
    database_url: str,
    request: pytest.FixtureRequest,
    person: Person,
) -> None:
    customer = await customer_with_history(platform, life, intake, feedback, person)
    other = await customer_with_history(platform, life, intake, feedback, Person.make())
    needles = person.needles()
    # Before: the API shows the data to those who may see it; the stored form never held it.
    before = await api_answers(platform, customer)
    shown = {"name", "phone", "corrected phone", "street", "postcode", "symptom", "comment"}
    assert shown | {"complaint"} <= set(found_in(before, needles))
    assert found_in(await export_and_verify(platform), needles) == []
    assert found_in(json.dumps(await relay_to(platform, broker)).encode(), needles) == []

    async with service_client("intake", platform, role="privacy_officer", subject="dpo") as dpo:
        body = {"request_id": "DSR-1", "legal_basis": "PIPL art. 47"}
        erased = await dpo.post(f"/customers/{customer.customer_id}/erasure", json=body)
        again = await dpo.post(
            f"/customers/{customer.customer_id}/erasure", json={**body, "request_id": "DSR-2"}
        )
    assert erased.status_code == 200, erased.text
    assert sorted(erased.json()["tickets"]) == sorted(customer.tickets)
    assert again.status_code == 200 and again.json() == erased.json()
    assert again.headers["idempotent-replayed"] == "true"

    after = await api_answers(platform, customer)
    assert found_in(after, needles) == []
    assert ERASED.encode() in after
    other_view = await api_answers(platform, other)
    assert other.person.name.encode() in other_view  # the other customer is untouched
    assert found_in(await export_and_verify(platform), needles) == []
    messages = await relay_to(platform, broker)
    assert any(m["event_type"] == "CustomerDataErased" for m in messages)
    assert found_in(json.dumps(messages, ensure_ascii=False).encode(), needles) == []

    projections = list(all_projections().values())
    for projection in projections:  # what the projector would have done by now
        await platform.runner.catch_up(projection)
    results = await replay(platform.settings, projections)
    assert all(not r.differences for r in results), [r.differences for r in results]
    await assert_database_files_clean(platform, backend, database_url, request, customer)


async def assert_database_files_clean(
    platform: Platform,
    backend: str,
    database_url: str,
    request: pytest.FixtureRequest,
    customer: Customer,
) -> None:
    needles = customer.person.needles()
    control = {"customer id": customer.customer_id.encode()}  # proves the files were read
    await platform.close()
    if backend == "sqlite":
        data = sqlite_files_after_vacuum(database_url)
        assert found_in(data, control) == ["customer id"]
        assert found_in(data, needles) == []
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = database_url.rsplit("/", 1)[-1]
    cluster.psql("VACUUM FULL", database=name)
    cluster.psql("CHECKPOINT")
    assert found_in_tree(cluster.datadir, control)
    assert found_in_tree(cluster.datadir, needles) == {}


async def test_erasure_shows_erased_everywhere_and_keeps_the_figures(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> None:
    customer = await customer_with_history(platform, life, intake, feedback, person)
    summary_before = await compliance_summary(platform)
    async with service_client("intake", platform, role="admin") as admin:
        body = {"request_id": "DSR-7", "legal_basis": "customer request"}
        response = await admin.post(f"/customers/{customer.customer_id}/erasure", json=body)
        assert response.status_code == 200, response.text
        view = (await admin.get(f"/tickets/{customer.tickets[0]}")).json()
        history = (await admin.get(f"/tickets/{customer.tickets[0]}/history")).json()
        by_phone = await admin.get("/tickets", params={"phone": person.phone})
        data = (await admin.get(f"/customers/{customer.customer_id}/data")).json()
    assert (view["customer_name"], view["customer_phone"], view["address_line"]) == (
        ERASED,
        ERASED,
        ERASED,
    )
    received = history["events"][0]["payload"]
    assert received["customer"] == {"name": ERASED, "phone": ERASED}
    assert received["problem"]["symptom"] == ERASED and history["chain_valid"]
    assert by_phone.json()["items"] == []  # the blind index went with the key
    assert data["status"] == "erased" and data["tickets"][0]["customer_name"] == ERASED
    assert {c["personal"]["comment"] for c in data["comments"] if "comment" in c["personal"]} == {
        ERASED
    }
    # Statistics, SLA and compliance never needed the clear values.
    assert await compliance_summary(platform) == summary_before


async def test_a_complaint_after_erasure_is_kept_and_reopens_nothing(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> None:
    # A reopened ticket would send a technician to an address no one can read any more.
    customer = await customer_with_history(platform, life, intake, feedback, person)
    first = customer.tickets[0]
    async with service_client("intake", platform, role="admin") as admin:
        body = {"request_id": "DSR-8", "legal_basis": "customer request"}
        erased = await admin.post(f"/customers/{customer.customer_id}/erasure", json=body)
        assert erased.status_code == 200, erased.text
        complaint = {"complaint": "still broken", "channel": "phone", "public": True}
        filed = await feedback.post(f"/tickets/{first}/complaints", json=complaint)
        assert filed.status_code == 201, filed.text
        assert (filed.json()["status"], filed.json()["outcome"]) == ("closed", "recorded")
        history = (await admin.get(f"/tickets/{first}/history")).json()["events"]
        view = (await admin.get(f"/tickets/{first}")).json()
    assert history[-1]["event_type"] == "ComplaintFiled"
    assert history[-1]["payload"]["complaint"] == ERASED and view["status"] == "closed"


async def compliance_summary(platform: Platform) -> dict[str, Any]:
    from tests.support.lifecycle import project_feedback

    await project_feedback(platform)
    figures: dict[str, Any] = {}
    month = {"month": f"{platform.clock.now():%Y-%m}"}
    async with service_client("feedback", platform, role="auditor") as auditor:
        for path in ("/compliance/summary", "/scorecards", "/compliance/tickets"):
            response = await auditor.get(path, params=month if path == "/scorecards" else None)
            assert response.status_code == 200, response.text
            figures[path] = response.json()
    return figures


async def test_subject_access_returns_everything_and_the_read_log_every_unmasked_read(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> None:
    customer = await customer_with_history(platform, life, intake, feedback, person)
    first = customer.tickets[0]
    # (subject, role, endpoint, ticket) of every response showing the data unmasked: a
    # response showing several of the customer's tickets is a read of each.
    reads = []
    async with service_client("intake", platform, subject="agent-9") as agent:
        assert (await agent.get(f"/tickets/{first}")).status_code == 200
        reads.append(("agent-9", "call_center_agent", "GET /tickets/{ticket_id}", first))
    async with service_client("intake", platform, role="dispatcher", subject="d-2") as disp:
        found = await disp.get("/tickets", params={"phone": person.new_phone})
        listed = [t["ticket_id"] for t in found.json()["items"]]
        assert len(listed) == len(customer.tickets) > 1
        assert set(listed) == set(customer.tickets)
        reads += [("d-2", "dispatcher", "GET /tickets", t) for t in listed]
    async with service_client("intake", platform, role="admin", subject="root") as admin:
        assert (await admin.get(f"/tickets/{first}/history")).status_code == 200
        reads.append(("root", "admin", "GET /tickets/{ticket_id}/history", first))
    before_access = len(reads)
    async with service_client("intake", platform, role="privacy_officer", subject="dpo") as dpo:
        lookup = {"customer": {"name": person.name, "phone": person.phone}}
        assert (await dpo.post("/customers/lookup", json=lookup)).json() == {
            "customer_id": customer.customer_id
        }
        data = (await dpo.get(f"/customers/{customer.customer_id}/data")).json()
        # About the customer, not one ticket: one read, without a ticket.
        reads.append(("dpo", "privacy_officer", "GET /customers/{customer_id}/data", None))
    assert {t["ticket_id"] for t in data["tickets"]} == set(customer.tickets)
    personal = [e["personal"] for e in data["events"]]
    assert {"customer.name": person.name, "customer.phone": person.phone} | {
        "address.line": person.line
    } == {k: personal[0][k] for k in ("customer.name", "customer.phone", "address.line")}
    assert person.new_phone in json.dumps(data)
    assert {
        c["personal"].get("comment") or c["personal"].get("complaint") for c in data["comments"]
    } == {
        person.comment,
        person.complaint,
    }

    def trail(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return sorted(
            (r["actor_subject"], r["actor_role"], r["endpoint"], r["ticket_id"]) for r in entries
        )

    # The trail in the subject-access answer: the reads made before it.
    assert trail(data["reads"]) == sorted(reads[:before_access])
    async with service_client("intake", platform, role="auditor") as auditor:
        log = await auditor.get(
            "/personal-data/reads", params={"customer_id": customer.customer_id}
        )
    entries = log.json()["items"]
    assert trail(entries) == sorted(reads)
    assert all(
        r["service"] == "intake" and r["customer_id"] == customer.customer_id for r in entries
    )


async def test_masked_reads_and_other_customers_are_not_logged(
    platform: Platform, intake: httpx.AsyncClient, person: Person
) -> None:
    ticket = await open_for(intake, person, "SN-MASK")
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    assert (await intake.post(f"/tickets/{ticket}/diagnosis", json=diagnosis)).status_code == 200
    async with service_client("dispatch", platform, role="auditor") as auditor:
        # A work list shows only the street: masked for an auditor, nothing revealed.
        queue = (await auditor.get("/dispatch-queue")).json()["items"]
        assert [t["address_line"] for t in queue] == ["***"]
    async with service_client("intake", platform, role="auditor") as auditor:
        entries = (await auditor.get("/personal-data/reads")).json()["items"]
    assert entries == []
    async with service_client("intake", platform, role="auditor") as auditor:
        assert (await auditor.get(f"/tickets/{ticket}")).json()["customer_name"] == person.name
        entries = (await auditor.get("/personal-data/reads")).json()["items"]
        at = "2026-11-02T10:00:00Z"
        backwards = await auditor.get("/personal-data/reads", params={"since": at, "until": at})
    assert [e["endpoint"] for e in entries] == ["GET /tickets/{ticket_id}"]
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "until"


async def test_a_repeated_erasure_answers_with_the_first_to_the_microsecond(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = await customer_with_history(platform, life, intake, feedback, person)
    # A clock that moves on every reading, as the system clock does.
    monkeypatch.setattr(clock, "now", lambda: clock.advance(microseconds=137))
    body = {"request_id": "DSR-7", "legal_basis": "PIPL art. 47"}
    path = f"/customers/{customer.customer_id}"
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        first = await dpo.post(f"{path}/erasure", json=body)
        again = await dpo.post(f"{path}/erasure", json=body)
        held = await dpo.get(f"{path}/data")
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    erased_at = first.json()["erased_at"]
    assert held.json()["erased_at"] == erased_at
    (erasure,) = [e for e in held.json()["privacy_events"] if "Erased" in e["event_type"]]
    assert erasure["occurred_at"] == erased_at


async def test_a_restored_key_of_an_erased_customer_is_found_and_erased_again(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> None:
    """A backup from before an erasure restored brings the customer's data key back: the
    ledger's erasure stands — verify names it, and a service's start erases it again (a
    black-box pass saw the clear values return)."""
    customer = await customer_with_history(platform, life, intake, feedback, person)
    keys = personal_data_keys.c
    saved = await platform.db.read(
        lambda c: c.execute(
            select(keys.wrapped_key, keys.lookup).where(keys.customer_id == customer.customer_id)
        ).one()
    )
    body = {"request_id": "DSR-9", "legal_basis": "PIPL art. 47"}
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        erased = await dpo.post(f"/customers/{customer.customer_id}/erasure", json=body)
    assert erased.status_code == 200, erased.text
    restore = (
        update(personal_data_keys)
        .where(keys.customer_id == customer.customer_id)
        .values(wrapped_key=saved.wrapped_key, lookup=saved.lookup, erased_at=None)
    )
    await platform.db.write(lambda c: c.execute(restore))
    report = await platform.db.read(lambda c: verify_ledger(c, platform.store))
    assert [(b.kind, b.stream_id, b.stream_version) for b in report.broken] == [
        ("erasure", f"customer-{customer.customer_id}", 1)
    ]
    # The entry points at the erasure event the ledger holds.
    assert report.broken[0].event_id and report.broken[0].position > 0
    await platform.check_personal_data()  # what every start does
    assert (await platform.db.read(lambda c: verify_ledger(c, platform.store))).ok
    row = await platform.db.read(
        lambda c: c.execute(
            select(keys.wrapped_key, keys.erased_at).where(keys.customer_id == customer.customer_id)
        ).one()
    )
    assert row.wrapped_key is None and row.erased_at is not None


async def test_erasure_is_refused_for_unknown_held_or_open_customers(
    platform: Platform, intake: httpx.AsyncClient, person: Person
) -> None:
    ticket = await open_for(intake, person, "SN-OPEN")
    customer_id = await customer_of(platform, ticket)
    body = {"request_id": "DSR-9", "legal_basis": "request"}
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        unknown = await dpo.post(
            f"/customers/{'0' * 8}-0000-7000-8000-{'0' * 12}/erasure", json=body
        )
        assert unknown.status_code == 404
        assert (
            await dpo.get(f"/customers/{'0' * 8}-0000-7000-8000-{'0' * 12}/data")
        ).status_code == 404
        still_open = await dpo.post(f"/customers/{customer_id}/erasure", json=body)
        assert still_open.status_code == 409
        assert still_open.json()["rule"] == "customer_has_open_tickets"
        hold = {"active": True, "reason": "court order 12"}
        placed = await dpo.put(f"/customers/{customer_id}/legal-hold", json=hold)
        assert placed.json()["legal_hold"] is True
        held = await dpo.post(f"/customers/{customer_id}/erasure", json=body)
        assert held.status_code == 409 and held.json()["rule"] == "legal_hold"
        # Erased again after a restore from an older backup, where the ticket (closed
        # since) is open: the open ticket does not refuse it, a legal hold still does.
        redo = {**body, "after_restore": True}
        held = await dpo.post(f"/customers/{customer_id}/erasure", json=redo)
        assert held.status_code == 409 and held.json()["rule"] == "legal_hold"
        released = {"active": False, "reason": "court order lifted"}
        assert (await dpo.put(f"/customers/{customer_id}/legal-hold", json=released)).is_success
        again = await dpo.post(f"/customers/{customer_id}/erasure", json=redo)
        assert again.status_code == 200, again.text
        assert again.json()["tickets"] == [ticket]
    # Its open ticket takes no new details: they could only be stored as [erased].
    correction = {"customer": {"name": "Zhang Newname", "phone": "13955556666"}, "reason": "r"}
    refused = await intake.patch(f"/tickets/{ticket}/contact", json=correction)
    assert refused.status_code == 409 and refused.json()["rule"] == "customer_erased"
    # A customer's data is every region's: a token confined to one requests none of it.
    async with service_client("intake", platform, role="admin", region="east") as regional:
        for answer in (
            await regional.get(f"/customers/{customer_id}/data"),
            await regional.post(f"/customers/{customer_id}/erasure", json=body),
            await regional.put(f"/customers/{customer_id}/legal-hold", json=hold),
            await regional.post(
                "/customers/lookup", json={"customer": {"name": person.name, "phone": person.phone}}
            ),
            await regional.get("/personal-data/reads"),
        ):
            assert answer.status_code == 403, answer.text
            assert answer.json()["errors"][0]["field"] == "region"


async def test_retention_erases_exactly_the_eligible_customers(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    from services.intake.jobs import erase_expired_customers

    days = platform.settings.privacy.retention_days
    people = {n: Person.make() for n in ("old", "held", "recent", "open")}
    ids = {}
    for name in ("old", "held"):
        ticket = await open_for(intake, people[name], f"SN-R-{name}")
        await close_ticket(life, feedback, ticket)
        ids[name] = await customer_of(platform, ticket)
    open_old = await open_for(intake, people["open"], "SN-R-open-1")
    await close_ticket(life, feedback, open_old)
    clock.advance(days=days - 10)
    recent = await open_for(intake, people["recent"], "SN-R-recent")
    await close_ticket(life, feedback, recent)
    ids["recent"] = await customer_of(platform, recent)
    ids["open"] = await customer_of(platform, open_old)
    await open_for(intake, people["open"], "SN-R-open-2")  # the same customer, still open
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        hold = {"active": True, "reason": "litigation"}
        assert (await dpo.put(f"/customers/{ids['held']}/legal-hold", json=hold)).status_code == 200
    clock.advance(days=11)
    assert await erase_expired_customers(platform) == [ids["old"]]
    assert await erase_expired_customers(platform) == []  # a second pass: nothing more
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        release = {"active": False, "reason": "case closed"}
        assert (
            await dpo.put(f"/customers/{ids['held']}/legal-hold", json=release)
        ).status_code == 200
        data = (await dpo.get(f"/customers/{ids['old']}/data")).json()
    assert data["status"] == "erased"
    assert data["privacy_events"][-1]["payload"]["source"] == "retention"
    assert await erase_expired_customers(platform) == [ids["held"]]


async def customer_of(platform: Platform, ticket_id: str) -> str:
    """The ticket's customer, read without a response (which would be logged)."""
    row = await platform.db.read(lambda c: get_ticket_row(c, ticket_id))
    return str(row.customer_id)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_returning_customer_is_one_customer_and_phone_search_works(
    platform: Platform, intake: httpx.AsyncClient, person: Person
) -> None:
    first = await open_for(intake, person, "SN-A")
    second = await open_for(
        intake, Person(**{**person.__dict__, "name": person.name.upper()}), "SN-B"
    )
    assert await customer_of(platform, first) == await customer_of(platform, second)
    async with service_client("intake", platform, role="dispatcher") as disp:
        found = await disp.get("/tickets", params={"phone": person.phone})
        unknown = await disp.get("/tickets", params={"phone": "13000000000"})
    assert {t["ticket_id"] for t in found.json()["items"]} == {first, second}
    assert unknown.json()["items"] == []
    # A duplicate is still found by the (blind-indexed) phone and the serial.
    third = await intake.post("/tickets", json=person.body("SN-A"))
    assert third.json()["possible_duplicate_of"] == first


async def test_an_idempotency_record_cannot_be_tested_against_guessed_details(
    platform: Platform, intake: httpx.AsyncClient
) -> None:
    """A request's fingerprint is keyed (the blind-index secret): the plain SHA-256 of a
    guessed body would otherwise find the phone number it was made from."""
    sent = body()
    headers = {"Idempotency-Key": "call-1"}
    first = await intake.post("/tickets", json=sent, headers=headers)
    again = await intake.post("/tickets", json=sent, headers=headers)
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    stored = await platform.db.read(
        lambda c: c.execute(text("SELECT request_hash FROM idempotency_keys")).scalar_one()
    )
    fingerprinted = ReceiveTicketRequest.model_validate(sent).model_dump(mode="json")
    body_text = orjson.dumps(fingerprinted, option=orjson.OPT_SORT_KEYS).decode()
    keyed = await platform.db.read(lambda c: platform.personal.request_digest(c, body_text))
    assert stored == "k1." + keyed
    assert hashlib.sha256(body_text.encode()).hexdigest()[:40] != keyed


async def test_an_erasure_forgets_the_fingerprints_of_its_tickets_requests(
    platform: Platform, intake: httpx.AsyncClient, person: Person
) -> None:
    """Kept, the fingerprint would let the caller test guesses of the erased details (the
    same body replays, another is refused): an erasure forgets it, and a retry is answered
    with the stored answer — which holds no personal data — whatever its body."""
    sent = person.body("SN-KEYED")
    opened = await intake.post("/tickets", json=sent, headers={"Idempotency-Key": "open-1"})
    ticket = opened.json()["ticket_id"]
    fix = {"customer": {"name": person.name, "phone": "13955556666"}, "reason": "new phone"}
    fixed = await intake.patch(
        f"/tickets/{ticket}/contact", json=fix, headers={"Idempotency-Key": "fix-1"}
    )
    other = await intake.post("/tickets", json=body(), headers={"Idempotency-Key": "someone-else"})
    assert (opened.status_code, fixed.status_code, other.status_code) == (201, 200, 201)
    customer_id = await customer_of(platform, ticket)
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        erasure = {"request_id": "DSR-11", "legal_basis": "request", "after_restore": True}
        erased = await dpo.post(f"/customers/{customer_id}/erasure", json=erasure)
        assert erased.status_code == 200, erased.text
    hashes = await platform.db.read(
        lambda c: dict(c.execute(text("SELECT key, request_hash FROM idempotency_keys")).all())
    )
    assert hashes["open-1"] == hashes["fix-1"] == "erased"
    assert hashes["someone-else"].startswith("k1.")  # another customer's stays
    guess = {**sent, "customer": {**sent["customer"], "phone": "13900000000"}}
    for path, method, retried, key in (
        ("/tickets", "post", guess, "open-1"),
        ("/tickets", "post", sent, "open-1"),
        (f"/tickets/{ticket}/contact", "patch", fix, "fix-1"),
    ):
        again = await intake.request(method, path, json=retried, headers={"Idempotency-Key": key})
        assert again.headers.get("idempotent-replayed") == "true", again.text
        assert again.status_code == (201 if method == "post" else 200)
    assert again.json()["ticket_id"] == ticket


async def test_the_words_erased_data_shows_are_no_value_to_give(
    life: Lifecycle, intake: httpx.AsyncClient, feedback: httpx.AsyncClient
) -> None:
    """Given as a name or an address, "[erased]" would read as an erasure (an export of
    tickets leaves such a ticket out, staff see an erased customer): refused, named."""
    sealed = f"pd1.{uuid.uuid4()}.{'A' * 40}"  # as an audit export shows a value
    for changes, named, said in (
        ({"customer__name": ERASED}, "customer.name", "what erased data shows"),
        ({"address__line": " [unreadable] "}, "address.line", "what erased data shows"),
        ({"problem__symptom": ERASED}, "problem.symptom", "what erased data shows"),
        ({"customer__name": "[Erased]"}, "customer.name", "what erased data shows"),
        ({"customer__name": sealed}, "customer.name", "give the clear value"),
    ):
        refused = await intake.post("/tickets", json=body(**changes))
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["errors"]
        assert error["field"] == named and said in error["message"], error
    kept = await intake.post("/tickets", json=body(customer__name="Li [erased] Wei"))
    assert kept.status_code == 201, kept.text
    # The free text of feedback is personal too: refused at the door, never a 500.
    ticket = kept.json()["ticket_id"]
    await life.through_repair(ticket)
    said = {**FOLLOW_UP, "channel": "call", "comment": " [unreadable] "}
    for path, sent, named in (
        (f"/tickets/{ticket}/follow-ups", said, "comment"),
        (f"/tickets/{ticket}/complaints", {"complaint": ERASED, "channel": "phone"}, "complaint"),
    ):
        refused = await feedback.post(path, json=sent)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == named


async def test_a_corrected_customer_is_found_by_their_new_details_until_erased(
    platform: Platform,
    life: Lifecycle,
    intake: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    person: Person,
) -> None:
    first = await open_for(intake, person, "SN-C1")
    customer_id = await customer_of(platform, first)
    moved = Person(**{**person.__dict__, "phone": person.new_phone})
    async with service_client("intake", platform, role="dispatcher") as disp:
        correction = {"customer": {"name": person.name, "phone": moved.phone}, "reason": "new"}
        assert (await disp.patch(f"/tickets/{first}/contact", json=correction)).status_code == 200

    async def lookup(who: Person) -> httpx.Response:
        body = {"customer": {"name": who.name, "phone": who.phone}}
        async with service_client("intake", platform, role="privacy_officer") as dpo:
            return await dpo.post("/customers/lookup", json=body)

    for who in (person, moved):  # by the first ticket's details and by the corrected ones
        assert (await lookup(who)).json() == {"customer_id": customer_id}
    second = await open_for(intake, moved, "SN-C2")  # the same person calling again
    assert await customer_of(platform, second) == customer_id

    for ticket in (first, second):
        await close_ticket(life, feedback, ticket)
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        body = {"request_id": "DSR-9", "legal_basis": "PIPL art. 47"}
        erased = await dpo.post(f"/customers/{customer_id}/erasure", json=body)
    assert sorted(erased.json()["tickets"]) == sorted([first, second])
    for who in (person, moved):  # the id names nobody: calling again makes a new customer
        assert (await lookup(who)).status_code == 404
    third = await open_for(intake, moved, "SN-C3")
    assert await customer_of(platform, third) != customer_id


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_read_log_is_written_off_the_request_path(
    platform: Platform, intake: httpx.AsyncClient, person: Person, clock: ManualClock
) -> None:
    ticket = await open_for(intake, person, "SN-LOG")
    assert platform.reads is not None
    platform.reads.flush_seconds = 3600  # only the explicit flush below writes
    for _ in range(3):
        assert (await intake.get(f"/tickets/{ticket}")).status_code == 200
    from shared.app.read_log import read_log

    assert await platform.db.read(lambda c: read_log(c)) == []  # buffered, not yet written
    assert await platform.reads.flush() == 3
    rows = await platform.db.read(lambda c: read_log(c))
    assert len(rows) == 3 and {r.read_at for r in rows} == {clock.now()}
    # Append-only in the database too: an edit or a deletion is refused, whoever asks (a
    # black-box pass rewrote and deleted entries unnoticed).
    for change in (
        "UPDATE personal_data_reads SET actor_subject = 'nobody'",
        "DELETE FROM personal_data_reads",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            await platform.db.write(lambda c, sql=change: c.execute(text(sql)))
    assert len(await platform.db.read(lambda c: read_log(c))) == 3


async def test_subject_access_names_the_customers_recorded_with_the_same_phone(
    platform: Platform, intake: httpx.AsyncClient, person: Person
) -> None:
    """A space inside a name is kept (docs): `李 伟` and `李伟` with one phone are two
    customers, and an erasure of one left the other's tickets in clear with nothing said;
    subject access lists the other so the officer's request can cover both."""
    ids = []
    for n, name in enumerate(("李伟", "李 伟", "李伟")):
        body = person.body(f"SN-SPACE-{n}")
        body["customer"]["name"] = name
        created = await intake.post("/tickets", json=body)
        assert created.status_code == 201, created.text
        ticket = await intake.get(f"/tickets/{created.json()['ticket_id']}")
        ids.append(ticket.json()["customer_id"])
    assert ids[0] == ids[2] != ids[1]
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        first = (await dpo.get(f"/customers/{ids[0]}/data")).json()
        second = (await dpo.get(f"/customers/{ids[1]}/data")).json()
    assert first["customers_sharing_a_phone"] == [ids[1]]
    assert second["customers_sharing_a_phone"] == [ids[0]]

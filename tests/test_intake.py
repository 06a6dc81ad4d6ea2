"""Intake over HTTP (httpx → the real ASGI app) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from tests.support.auth import headers_for
from tests.support.clients import service_client
from tests.support.lifecycle import dispatch_ticket, project_feedback

DISPATCHER = headers_for("dispatcher", subject="disp-1", region="east")


def body(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(RECEIVE_EXAMPLE)
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return data


async def open_ticket(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post("/tickets", json=body(**changes))
    assert response.status_code == 201, response.text
    return response.json()


async def test_receive_returns_number_deadlines_and_location(intake: httpx.AsyncClient) -> None:
    response = await intake.post("/tickets", json=body(urgency="urgent"))
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["ticket_number"] == "TL-20261102-000001"
    assert response.headers["location"] == f"/tickets/{data['ticket_id']}"
    assert response.headers["etag"] == '"1"'
    # Clock is 2026-11-02T09:00Z; urgent → 2 h to first response.
    assert data["sla"] == {"response_due_at": "2026-11-02T11:00:00Z", "resolution_due_at": None}
    assert data["status"] == "received" and data["version"] == 1

    second = await open_ticket(intake, product__serial_number="SN-0002")
    assert second["ticket_number"] == "TL-20261102-000002"

    got = (await intake.get(f"/tickets/{data['ticket_id']}")).json()
    assert got["customer_phone"] == "138****5678"  # masked for a call-center agent
    assert got["warranty_status"] == "in_warranty"  # derived: bought 2026-03-01, 12 months
    full = (await intake.get(f"/tickets/{data['ticket_id']}", headers=DISPATCHER)).json()
    assert full["customer_phone"] == "13812345678"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer__phone": "12ab"}, "customer.phone"),
        ({"urgency": "whenever"}, "urgency"),
        ({"channel": ...}, "channel"),
        ({"address__region": ...}, "address.region"),
        ({"product__purchase_date": "2026-13-01"}, "product.purchase_date"),
        ({"product__purchase_date": "2027-01-01"}, "product.purchase_date"),
        ({"product__purchase_date": "0001-01-01"}, "product.purchase_date"),
        ({"customer__name": "\u200b\u200b"}, "customer.name"),
        ({"address__line": "\u2060"}, "address.line"),
        ({"warranty_status": "out_of_warranty"}, "warranty_status"),
        ({"surprise": 1}, "surprise"),
        ({"problem__symptom": ""}, "problem.symptom"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    intake: httpx.AsyncClient, changes: dict[str, Any], field: str
) -> None:
    response = await intake.post("/tickets", json=body(**changes))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in problem["errors"]], problem
    # Nothing was written.
    assert (await intake.get("/tickets")).json()["items"] == []


async def test_a_json_body_sent_as_another_media_type_names_the_content_type(
    intake: httpx.AsyncClient,
) -> None:
    """The body is a valid object, the media type is what is wrong: say so."""
    sent = json.dumps(body()).encode()
    for media in ("text/plain", None):
        headers = {"content-type": media} if media else {}
        response = await intake.post("/tickets", content=sent, headers=headers)
        assert response.status_code == 422, response.text
        (error,) = response.json()["errors"]
        assert error["field"] == "Content-Type" and "application/json" in error["message"]
    assert (await intake.get("/tickets")).json()["items"] == []
    # A body that is no object, sent as JSON, is still about the body.
    response = await intake.post("/tickets", json=[1])
    assert [e["field"] for e in response.json()["errors"]] == ["body"]


async def test_a_purchase_made_today_east_of_utc_is_not_in_the_future(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    # 20:00 UTC on 2 Nov is 04:00 on 3 Nov in Hangzhou: a purchase that morning is today.
    clock.set(datetime(2026, 11, 2, 20, 0, tzinfo=UTC))
    bought = await open_ticket(intake, product__purchase_date="2026-11-03")
    got = (await intake.get(f"/tickets/{bought['ticket_id']}")).json()
    assert got["warranty_status"] == "in_warranty"
    # No time zone has reached 4 Nov yet (UTC+14 is at 10:00 on 3 Nov).
    later = await intake.post(
        "/tickets", json=body(product__purchase_date="2026-11-04", product__serial_number="S2")
    )
    assert later.status_code == 422 and "product.purchase_date" in later.text


async def test_old_purchase_is_out_of_warranty_and_extended_is_taken_as_stated(
    intake: httpx.AsyncClient,
) -> None:
    old = await open_ticket(intake, product__purchase_date="2024-01-01")
    assert (await intake.get(f"/tickets/{old['ticket_id']}")).json()["warranty_status"] == (
        "out_of_warranty"
    )
    extended = await open_ticket(
        intake,
        product__purchase_date="2024-01-01",
        warranty_status="extended",
        product__serial_number="SN-X",
    )
    got = (await intake.get(f"/tickets/{extended['ticket_id']}")).json()
    assert got["warranty_status"] == "extended"


async def test_unknown_ticket_is_404_and_bad_id_is_422(intake: httpx.AsyncClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for response in (
        await intake.get(f"/tickets/{missing}"),
        await intake.get(f"/tickets/{missing}/history"),
        await intake.post(
            f"/tickets/{missing}/diagnosis",
            json={"category": "wear", "complexity": "simple", "resolution_path": "on_site"},
        ),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith("not-found")
    assert (await intake.get("/tickets/not-a-uuid")).status_code == 422


async def test_idempotent_retry_returns_the_same_ticket(intake: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "call-42"}
    first = await intake.post("/tickets", json=body(), headers=headers)
    again = await intake.post("/tickets", json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await intake.post("/tickets", json=body(urgency="critical"), headers=headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert len((await intake.get("/tickets")).json()["items"]) == 1


async def test_ten_parallel_identical_posts_open_one_ticket(intake: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "storm-1"}
    responses = await asyncio.gather(
        *(intake.post("/tickets", json=body(), headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["ticket_id"] for r in responses}) == 1
    assert len((await intake.get("/tickets")).json()["items"]) == 1


async def test_possible_duplicate_is_reported_not_merged(intake: httpx.AsyncClient) -> None:
    first = await open_ticket(intake)
    second = await open_ticket(intake, customer__phone="138-1234-5678")
    assert second["possible_duplicate_of"] == first["ticket_id"]
    assert second["ticket_id"] != first["ticket_id"]
    other_product = await open_ticket(intake, product__serial_number="SN-9999")
    assert other_product["possible_duplicate_of"] is None
    # Another region's ticket is never named: everyone reading this one sees its region.
    west = await open_ticket(intake, address__region="west")
    assert west["possible_duplicate_of"] is None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_narrowest_filter_leads_the_ticket_list(platform: Platform) -> None:
    """A customer's (phone) or a technician's tickets are a handful: with either given,
    the list reaches them through that index, never by walking a region's, a status's or
    an urgency's history in the list's order (SQLite plans without statistics)."""
    from services.intake.read_models import TicketFilters, list_ticket_rows
    from tests.support.plans import explained, recorded_selects

    broad = [{"region": "east"}, {"status": "received"}, {"urgency": "critical"}, {}]
    leads = {
        "phone_digest": "ix_ticket_state_customer_id",
        "technician_id": "ix_ticket_state_technician_id_created_at",
    }
    picks = [({narrow: "x", **other}, index) for narrow, index in leads.items() for other in broad]
    picks.append(({"phone_digest": "x", "technician_id": "t"}, leads["phone_digest"]))
    assert platform.db.sqlite_engine is not None
    with recorded_selects(platform.db.sqlite_engine) as statements:
        for pick, _ in picks:
            filters = TicketFilters(**pick)
            await platform.db.read(
                lambda c, f=filters: list_ticket_rows(c, f, cursor=None, limit=50)
            )
    assert len(statements) == len(picks)
    for (statement, parameters), (pick, index) in zip(statements, picks, strict=True):
        plan = await platform.db.read(lambda c, s=statement, p=parameters: explained(c, s, p))
        assert index in plan[0], (pick, plan)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_duplicate_check_reads_only_the_callers_tickets(platform: Platform) -> None:
    """Every new ticket asks for an open duplicate: SQLite (no statistics) once walked the
    region's whole history for it, 130 ms a ticket at 300k tickets. It must reach
    ``ticket_state`` through the customer's own tickets, whatever the table holds."""
    from services.intake.read_models import _SAME_MODEL, _SAME_SERIAL
    from tests.support.plans import explained

    for statement in (_SAME_SERIAL, _SAME_MODEL):
        plan = await platform.db.read(
            lambda conn, s=statement: explained(conn, s.qmark, ("digest", "x", "east"))
        )
        steps = [step for step in plan if "ticket_state" in step or " t " in f"{step} "]
        assert steps and all("ix_ticket_state_customer_id" in step for step in steps), plan


async def test_diagnosis_sets_resolution_deadline_and_rules(intake: httpx.AsyncClient) -> None:
    ticket = await open_ticket(intake)
    tid = ticket["ticket_id"]
    diagnosis = {
        "category": "quality_defect",
        "complexity": "complex",
        "resolution_path": "on_site",
        "expected_parts": ["MOTOR-1"],
    }
    stale = await intake.post(
        f"/tickets/{tid}/diagnosis", json=diagnosis, headers={"If-Match": '"0"'}
    )
    assert stale.status_code == 409 and stale.json()["rule"] == "expected_version"
    said = stale.json()
    assert (said["expected_version"], said["current_version"]) == (0, 1)
    assert said["detail"].startswith("it is at version 1, not 0")  # no internal stream id
    # An unknown ticket is its 404 whatever version the caller believes it read.
    unknown = await intake.post(
        f"/tickets/{uuid.uuid4()}/diagnosis", json=diagnosis, headers={"If-Match": '"3"'}
    )
    assert unknown.status_code == 404 and unknown.json()["rule"] == "ticket_not_found"
    response = await intake.post(
        f"/tickets/{tid}/diagnosis", json=diagnosis, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200, response.text
    assert response.json()["sla"]["resolution_due_at"] == "2026-11-05T09:00:00Z"  # +72 h
    state = (await intake.get(f"/tickets/{tid}")).json()
    assert state["status"] == "diagnosed" and state["responded_at"] is not None
    bad = await intake.post(
        f"/tickets/{tid}/diagnosis", json={**diagnosis, "remote_outcome": "fixed"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "remote_outcome"


async def test_remote_guidance_goes_straight_to_repaired(intake: httpx.AsyncClient) -> None:
    tid = (await open_ticket(intake))["ticket_id"]
    response = await intake.post(
        f"/tickets/{tid}/diagnosis",
        json={
            "category": "misuse",
            "complexity": "simple",
            "resolution_path": "remote_guidance",
            "remote_outcome": "fixed",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "repaired" and len(response.json()["events"]) == 2
    again = await intake.post(
        f"/tickets/{tid}/diagnosis",
        json={"category": "misuse", "complexity": "simple", "resolution_path": "remote_guidance"},
    )
    assert again.status_code == 409 and again.json()["rule"] == "diagnosis_after_dispatch"


async def test_corrections_are_new_events_in_the_history(intake: httpx.AsyncClient) -> None:
    tid = (await open_ticket(intake))["ticket_id"]
    correction = {"customer": {"name": "Li Wei", "phone": "13987654321"}, "reason": "new mobile"}
    response = await intake.patch(f"/tickets/{tid}/contact", json=correction)
    assert response.status_code == 200, response.text
    same = await intake.patch(f"/tickets/{tid}/contact", json=correction)
    assert same.status_code == 409 and same.json()["rule"] == "nothing_to_correct"
    history = (await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)).json()
    assert history["chain_valid"] is True
    assert [e["event_type"] for e in history["events"]] == [
        "TicketReceived",
        "ContactDetailsCorrected",
    ]
    assert history["events"][0]["payload"]["customer"]["phone"] == "13812345678"
    assert history["events"][1]["payload"]["customer"]["phone"] == "13987654321"
    assert history["events"][1]["prev_hash"] == history["events"][0]["hash"]
    masked = (await intake.get(f"/tickets/{tid}/history")).json()
    assert masked["events"][1]["payload"]["customer"]["phone"] == "139****4321"
    current = (await intake.get(f"/tickets/{tid}", headers=DISPATCHER)).json()
    assert current["customer_phone"] == "13987654321" and current["version"] == 2
    # Searching by phone is for roles that see the number (docs/personal-data.md).
    by_phone = await intake.get("/tickets", params={"phone": "13987654321"}, headers=DISPATCHER)
    assert [t["ticket_id"] for t in by_phone.json()["items"]] == [tid]


async def test_an_address_in_another_region_moves_the_ticket_until_it_is_dispatched(
    platform: Platform, intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    west = {"line": "9 West St", "postcode": "610000", "region": "west"}
    moved = (await open_ticket(intake))["ticket_id"]
    clock.advance(minutes=5)
    response = await intake.patch(
        f"/tickets/{moved}/contact", json={"address": west, "reason": "wrong city taken"}
    )
    assert response.status_code == 200, response.text
    assert (await intake.get(f"/tickets/{moved}")).json()["region"] == "west"
    # Its past too is the new region's only: the SLA clock as it stood before the move.
    before = (await intake.get(f"/tickets/{moved}/history")).json()["events"][0]["recorded_at"]
    await project_feedback(platform)
    for region, status in (("east", 404), ("west", 200)):
        for service, path in (
            ("dispatch", "/tickets/{}/sla"),
            ("feedback", "/compliance/tickets/{}"),
        ):
            async with service_client(
                service, platform, role="regional_center", region=region
            ) as center:
                past = await center.get(path.format(moved), params={"as_of": before})
            assert past.status_code == status, (region, path, past.text)
    dispatched = (await open_ticket(intake, product__serial_number="SN-D"))["ticket_id"]
    await dispatch_ticket(platform, dispatched, service_point_id="sp-east-1")
    refused = await intake.patch(
        f"/tickets/{dispatched}/contact", json={"address": west, "reason": "moved"}
    )
    assert refused.status_code == 409
    assert refused.json()["rule"] == "region_change_after_dispatch"
    assert (await intake.get(f"/tickets/{dispatched}")).json()["region"] == "east"
    # The address within the region can still be corrected.
    east = {"line": "2 New Rd", "postcode": "310000", "region": "east"}
    fixed = await intake.patch(
        f"/tickets/{dispatched}/contact", json={"address": east, "reason": "new flat"}
    )
    assert fixed.status_code == 200, fixed.text


async def test_a_moved_tickets_audit_export_is_whole_and_only_its_new_regions(
    intake: httpx.AsyncClient,
) -> None:
    """The export of one ticket follows the ticket, as its history does: the region it
    left gets 404, the region it joined gets every event, from before the move too."""
    west = {"line": "9 West St", "postcode": "610000", "region": "west"}
    moved = (await open_ticket(intake))["ticket_id"]
    response = await intake.patch(
        f"/tickets/{moved}/contact", json={"address": west, "reason": "wrong city taken"}
    )
    assert response.status_code == 200, response.text

    async def export(region: str) -> httpx.Response:
        caller = headers_for("regional_center", subject=f"rc-{region}", region=region)
        return await intake.get("/audit/export", params={"ticket_id": moved}, headers=caller)

    left, joined = await export("east"), await export("west")
    assert left.status_code == 404 and left.json()["rule"] == "ticket_not_found"
    assert joined.status_code == 200, joined.text
    history = (await intake.get(f"/tickets/{moved}/history")).json()["events"]
    summary = json.loads(joined.headers["x-export-summary"])
    assert summary["events"] == len(history) == 2
    assert summary["scope"]["ticket_id"] == moved and summary["scope"]["region"] is None


async def test_pagination_is_stable_under_inserts(intake: httpx.AsyncClient, clock) -> None:
    ids = []
    for n in range(7):
        clock.advance(minutes=1)
        ids.append((await open_ticket(intake, product__serial_number=f"S{n}"))["ticket_id"])
    page1 = (await intake.get("/tickets", params={"limit": 3})).json()
    assert [t["ticket_id"] for t in page1["items"]] == ids[::-1][:3]
    clock.advance(minutes=1)
    await open_ticket(intake, product__serial_number="late")  # arrives between pages
    page2 = (
        await intake.get("/tickets", params={"limit": 3, "cursor": page1["next_cursor"]})
    ).json()
    page3_response = await intake.get(
        "/tickets", params={"limit": 3, "cursor": page2["next_cursor"]}
    )
    page3 = page3_response.json()
    linked = await intake.get("/tickets", params={"limit": 3})
    cursor = linked.json()["next_cursor"]
    assert linked.headers["Link"].endswith(f'cursor={cursor}>; rel="next"')
    assert "Link" not in page3_response.headers
    seen = [t["ticket_id"] for p in (page1, page2, page3) for t in p["items"]]
    assert seen == ids[::-1] and page3["next_cursor"] is None
    assert (await intake.get("/tickets", params={"cursor": "garbage!"})).status_code == 422


async def test_filters(intake: httpx.AsyncClient, clock) -> None:
    a = await open_ticket(intake, urgency="critical")
    clock.advance(hours=2)
    await open_ticket(intake, address__region="west", product__serial_number="W1")

    async def ids(**params: str) -> list[str]:
        response = await intake.get("/tickets", params=params)
        assert response.status_code == 200, response.text
        return [t["ticket_id"] for t in response.json()["items"]]

    assert await ids(urgency="critical") == [a["ticket_id"]]
    assert len(await ids(region="west")) == 1
    assert await ids(created_to="2026-11-02T10:00:00Z") == [a["ticket_id"]]
    assert len(await ids(status="received")) == 2
    assert (await intake.get("/tickets", params={"status": "lost"})).status_code == 422
    # A reversed period is the caller's mistake, not an empty page (as the audit export).
    at = "2026-11-02T10:00:00Z"
    reversed_ = await intake.get("/tickets", params={"created_from": at, "created_to": at})
    assert reversed_.status_code == 422 and reversed_.json()["errors"][0]["field"] == "created_to"


async def test_openapi_documents_every_endpoint_with_examples(intake: httpx.AsyncClient) -> None:
    spec = (await intake.get("/openapi.json")).json()
    assert {"/tickets", "/tickets/{ticket_id}/diagnosis", "/tickets/{ticket_id}/history"} <= set(
        spec["paths"]
    )
    schemas = spec["components"]["schemas"]
    assert schemas["ReceiveTicketRequest"]["examples"]
    assert "ProblemDetails" in schemas
    assert (await intake.get("/docs")).status_code == 200


async def test_as_of_returns_the_historical_state(intake: httpx.AsyncClient, clock) -> None:
    tid = (await open_ticket(intake))["ticket_id"]  # 09:00
    clock.advance(hours=1)  # 10:00
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    assert (await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis)).status_code == 200
    before = await intake.get(f"/tickets/{tid}", params={"as_of": "2026-11-02T09:30:00Z"})
    assert before.status_code == 200, before.text
    assert before.json()["status"] == "received" and before.json()["version"] == 1
    assert before.headers["etag"] == '"1"'  # the version shown (If-Match with it: 409)
    now = (await intake.get(f"/tickets/{tid}")).json()
    at_now = (await intake.get(f"/tickets/{tid}", params={"as_of": "2026-11-02T10:00:00Z"})).json()
    assert at_now == now  # the fold and the projection agree
    too_early = await intake.get(f"/tickets/{tid}", params={"as_of": "2026-11-02T08:00:00Z"})
    assert too_early.status_code == 404
    naive = await intake.get(f"/tickets/{tid}", params={"as_of": "2026-11-02T10:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "as_of"
    # A "+" typed into a URL arrives as a space: said so, with the way to send it.
    spaced = await intake.get(f"/tickets/{tid}?as_of=2026-11-02T17:30:00+08:00")
    assert spaced.status_code == 422 and "%2B08:00" in spaced.json()["errors"][0]["message"]
    encoded = await intake.get(f"/tickets/{tid}?as_of=2026-11-02T17:30:00%2B08:00")
    assert encoded.json()["status"] == "received"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_every_deadline_counts_from_the_received_event_itself(
    platform: Any, intake: httpx.AsyncClient
) -> None:
    """On a real clock (not a test's fixed one): the response deadline is exactly the
    received event's own time plus the urgency's hours, never a second reading of the
    clock; the resolution deadline too, from the same instant."""
    from datetime import datetime, timedelta

    from shared.kernel.clock import SystemClock

    platform.clock = platform.store.clock = SystemClock()
    platform._executors.clear()  # rebuilt on the real clock
    ticket = await open_ticket(intake, urgency="critical")
    tid = ticket["ticket_id"]
    diagnosed = await intake.post(
        f"/tickets/{tid}/diagnosis",
        json={"category": "wear", "complexity": "simple", "resolution_path": "on_site"},
    )
    assert diagnosed.status_code == 200, diagnosed.text
    history = (await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)).json()
    received = history["events"][0]
    at = datetime.fromisoformat(received["occurred_at"])
    assert datetime.fromisoformat(received["payload"]["response_due_at"]) == at + timedelta(
        hours=0.5
    )
    diagnosis = history["events"][1]["payload"]
    assert datetime.fromisoformat(diagnosis["resolution_due_at"]) == at + timedelta(hours=4)


async def test_a_tampered_history_says_so_and_a_damaged_row_is_named(
    intake: httpx.AsyncClient, platform: Platform
) -> None:
    """An edited event shows as a broken link; a row edited into no event at all answers
    a 500 problem naming its position — for reads and commands alike, nothing written."""
    from sqlalchemy import func, select, text, update

    from shared.eventstore.tables import events

    tid = (await open_ticket(intake))["ticket_id"]
    correction = {"customer": {"name": "Li Wei", "phone": "13987654321"}, "reason": "new mobile"}
    assert (await intake.patch(f"/tickets/{tid}/contact", json=correction)).status_code == 200
    first, second = await platform.db.read(
        lambda c: list(
            c.execute(
                select(events.c.position).where(events.c.stream_id == tid).order_by("position")
            ).scalars()
        )
    )
    edited = update(events).where(events.c.position == first).values(region="west")
    await platform.db.write(lambda c: c.execute(edited))
    history = (await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)).json()
    assert history["chain_valid"] is False
    assert [e["hash_ok"] for e in history["events"]] == [False, True]
    # A key given twice: the same parsed value, another text — not the event as hashed.
    doubled = text(
        'UPDATE events SET payload = \'{"reason":"x",\' || substr(payload, 2) WHERE position = :p'
    )
    await platform.db.write(lambda c: c.execute(doubled, {"p": second}))
    history = (await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)).json()
    assert [e["hash_ok"] for e in history["events"]] == [False, False]

    garbage = update(events).where(events.c.position == second).values(payload="not json")
    await platform.db.write(lambda c: c.execute(garbage))
    head = select(func.max(events.c.position))
    before = await platform.db.read(lambda c: c.execute(head).scalar_one())
    for answer in (
        await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER),
        await intake.patch(f"/tickets/{tid}/contact", json={**correction, "reason": "again"}),
    ):
        assert answer.status_code == 500, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/ledger-damaged") and problem["position"] == second
        assert "ticketline verify" in problem["detail"]
    assert await platform.db.read(lambda c: c.execute(head).scalar_one()) == before


async def test_a_history_cut_in_the_middle_or_at_the_end_says_so(
    intake: httpx.AsyncClient, platform: Platform
) -> None:
    """Every remaining link of a stream cut at its end is intact: only the version its
    state records (the ETag) tells the history it lost events."""
    from sqlalchemy import select, text

    from shared.eventstore.tables import events
    from shared.eventstore.verify import verify_ledger
    from shared.readmodels.ticket_state import ticket_tail_problems

    tid = (await open_ticket(intake))["ticket_id"]
    for phone in ("13987654321", "13987654322", "13987654323"):
        correction = {"customer": {"name": "Li Wei", "phone": phone}, "reason": "new mobile"}
        assert (await intake.patch(f"/tickets/{tid}/contact", json=correction)).status_code == 200
    ordered = select(events.c.position).where(events.c.stream_id == tid).order_by("position")
    positions = await platform.db.read(lambda c: list(c.execute(ordered).scalars()))

    async def cut(position: int) -> dict[str, Any]:
        for table in ("outbox", "events"):
            delete = text(f"DELETE FROM {table} WHERE position = :p")
            await platform.db.write(lambda c, d=delete: c.execute(d, {"p": position}))
        history = await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)
        return history.json()  # type: ignore[no-any-return]

    history = await cut(positions[-1])
    assert history["chain_valid"] is False and all(e["hash_ok"] for e in history["events"])
    assert history["problems"] == [
        "the ticket's state records version 4, the ledger holds versions up to 3: events at "
        "its end were removed"
    ]
    # `ticketline verify` names the ticket too (the gap names the next event's stream).
    tails = [ticket_tail_problems]
    report = await platform.db.read(lambda c: verify_ledger(c, platform.store, tails=tails))
    assert [(b.kind, b.stream_id, b.stream_version) for b in report.broken if b.stream_id] == [
        ("stream_tail", tid, 3)
    ]
    history = await cut(positions[1])
    assert [e["hash_ok"] for e in history["events"]] == [True, False]
    assert history["problems"][0].startswith("version 3 does not follow version 1")


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL refuses text not in UTF-8
async def test_a_row_whose_text_is_not_utf8_is_named_by_every_read(
    intake: httpx.AsyncClient, platform: Platform
) -> None:
    """One payload byte edited into no UTF-8: the history, the audit export and the event
    stream name the position (sqlite3 refused the whole read: a 500 without it, a 503)."""
    from sqlalchemy import text

    tid = (await open_ticket(intake))["ticket_id"]
    bad = text(
        "UPDATE events SET payload = CAST(substr(CAST(payload AS BLOB), 1, 5) || x'c3' || "
        "substr(CAST(payload AS BLOB), 7) AS TEXT) WHERE stream_id = :t"
    )
    await platform.db.write(lambda c: c.execute(bad, {"t": tid}))
    auditor = headers_for("auditor", subject="aud-1")
    for answer in (
        await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER),
        await intake.get("/audit/export", headers=auditor),
    ):
        assert answer.status_code == 500, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/ledger-damaged") and problem["position"] == 1


async def test_a_row_edited_into_another_payload_is_named_by_every_read(
    intake: httpx.AsyncClient, platform: Platform
) -> None:
    """Valid JSON that is no longer a valid event (an urgency no ticket can have): the
    view, a command and the history's hash name the position, as for a row that is not
    JSON at all — never a bare 500."""
    from sqlalchemy import text

    tid = (await open_ticket(intake))["ticket_id"]
    edit = text(
        'UPDATE events SET payload = replace(payload, \'"urgency":"normal"\', '
        '\'"urgency":"apocalyptic"\') WHERE stream_id = :t'
    )
    await platform.db.write(lambda c: c.execute(edit, {"t": tid}))
    history = (await intake.get(f"/tickets/{tid}/history", headers=DISPATCHER)).json()
    assert [e["hash_ok"] for e in history["events"]] == [False]
    diagnosis = {"category": "quality_defect", "complexity": "simple", "resolution_path": "on_site"}
    for answer in (
        await intake.get(f"/tickets/{tid}", headers=DISPATCHER),
        await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis),
    ):
        assert answer.status_code == 500, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/ledger-damaged") and problem["position"] == 1


async def test_a_stored_answer_replays_only_to_the_same_reach(intake: httpx.AsyncClient) -> None:
    """The same person with a token for another region (or another role) reusing a key
    gets what that token may see, never the stored answer."""
    tid = (await open_ticket(intake))["ticket_id"]
    diagnosis = {"category": "quality_defect", "complexity": "simple", "resolution_path": "on_site"}
    keyed = {"Idempotency-Key": "diag-once"}
    east = {**DISPATCHER, **keyed}
    first = await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis, headers=east)
    assert first.status_code == 200, first.text
    again = await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis, headers=east)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    west = {**headers_for("dispatcher", subject="disp-1", region="west"), **keyed}
    other_region = await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis, headers=west)
    assert other_region.status_code == 404, other_region.text
    agent = {**headers_for("call_center_agent", subject="disp-1"), **keyed}
    other_role = await intake.post(f"/tickets/{tid}/diagnosis", json=diagnosis, headers=agent)
    assert other_role.headers.get("Idempotent-Replayed") is None, other_role.text

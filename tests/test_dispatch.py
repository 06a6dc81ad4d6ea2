"""Dispatch over HTTP on SQLite and PostgreSQL: the network, assignment, visit, repair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.dispatch.projections import TICKET_FLAGS
from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.tickets import TicketClosed, TicketReopened
from tests.support.clients import service_client
from tests.support.dispatch_network import (
    POINTS,
    TECHNICIANS,
    build_network,
    hours,
    open_ticket,
    problem_rule,
)
from tests.support.ledger import ledger_head
from tests.support.lifecycle import append_ticket_events


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("dispatch", platform, role="admin") as client:
        yield client


@pytest.fixture
async def network(admin: httpx.AsyncClient) -> None:
    await build_network(admin)


async def dispatch_ok(client: httpx.AsyncClient, ticket_id: str, **body: object) -> dict:
    response = await client.post(f"/tickets/{ticket_id}/dispatch", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def record(platform: Platform, ticket_id: str, payload: EventPayload) -> None:
    """An event another service records (feedback's reopen and close)."""
    await append_ticket_events(
        platform, ticket_id, [payload], role="customer_relations", service="feedback"
    )


async def stream(platform: Platform, stream_id: str) -> list[EventEnvelope]:
    return await platform.db.read(lambda c: platform.store.read_stream(c, stream_id))


# --- the network -------------------------------------------------------------------------


async def test_network_is_managed_by_admin_and_read_by_region(
    platform: Platform, admin: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    await build_network(admin)
    points = (await admin.get("/service-points")).json()["items"]
    assert {p["id"] for p in points} == {p["id"] for p in POINTS}
    # A global caller's region filter is the region's members only.
    in_west = (await admin.get("/service-points", params={"region": "west"})).json()["items"]
    assert {p["id"] for p in in_west} == {"rc-west", "sp-west-1"}
    got = await dispatch.get("/service-points/sp-east-2")
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert got.json()["postcodes"] == ["3100"] and got.json()["kind"] == "dealer"
    tech = (await dispatch.get("/technicians/t-b")).json()
    assert tech["skills"] == ["washing_machines"] and tech["region"] == "east"
    assert tech["timezone"] == "UTC" and len(tech["working_hours"]) == 5

    # A dispatcher may read, not manage; one bound to a region sees only it.
    assert (
        await dispatch.post("/service-points", json={**POINTS[0], "id": "x"})
    ).status_code == 403
    async with service_client("dispatch", platform, region="west") as west:
        # Headquarters, of no region, is every caller's (docs/access-control.md).
        assert {p["id"] for p in (await west.get("/service-points")).json()["items"]} == {
            "hq",
            "rc-west",
            "sp-west-1",
        }
        top = await west.get("/service-points", params={"level": "headquarters"})
        assert [p["id"] for p in top.json()["items"]] == ["hq"]
        assert (await west.get("/service-points/hq")).status_code == 200
        assert (await west.get("/service-points/sp-east-1")).status_code == 404
        assert [t["id"] for t in (await west.get("/technicians")).json()["items"]] == ["t-w"]
        active = await west.get("/technicians", params={"active": "true"})
        assert [t["id"] for t in active.json()["items"]] == ["t-w"]
        assert (await west.get("/technicians", params={"active": "yes"})).status_code == 422

    # Structure rules.
    bad = {
        "id": "sp-x",
        "name": "X",
        "level": "service_point",
        "parent_id": "rc-east",
        "region": "east",
    }
    response = await admin.post("/service-points", json=bad)
    assert response.status_code == 422 and problem_rule(response) == "kind"
    response = await admin.post("/service-points", json={**bad, "kind": "dealer", "region": "west"})
    assert response.status_code == 409 and problem_rule(response) == "parent_region"
    response = await admin.post("/service-points", json=POINTS[3])
    assert response.status_code == 409 and problem_rule(response) == "already_registered"
    # The same words as for an id registered in another case (a race gives either).
    assert response.json()["detail"] == (
        f"id: service point {POINTS[3]['id']} is registered (ids compare without case)"
    )
    hq = {"id": "hq-2", "name": "HQ", "level": "headquarters", "region": "east"}
    response = await admin.post("/service-points", json=hq)
    assert response.status_code == 422 and problem_rule(response) == "region"
    response = await admin.post(
        "/technicians", json={"id": "t-z", "name": "Z", "service_point_id": "sp-nowhere"}
    )
    assert response.status_code == 422 and problem_rule(response) == "service_point_id"
    # Not a place's zone either: the host's own (suggestions would move with the
    # machine's setting), the zone database's fallback rules, its leap-second variants.
    for zone in ("Mars/Base", "localtime", "posixrules", "Factory", "right/UTC", "posix/UTC"):
        response = await admin.post(
            "/technicians",
            json={"id": "t-z", "name": "Z", "service_point_id": "sp-east-1", "timezone": zone},
        )
        assert response.status_code == 422 and problem_rule(response) == "timezone", zone
    for shifts in (
        [{"weekday": "mon", "start": "18:00", "end": "08:00"}],
        [
            {"weekday": "mon", "start": "08:00", "end": "12:00"},
            {"weekday": "mon", "start": "11:00", "end": "13:00"},
        ],
        [{"weekday": "tue", "start": "08:00:00.5", "end": "12:00"}],
    ):
        response = await admin.post(
            "/technicians",
            json={
                "id": "t-z",
                "name": "Z",
                "service_point_id": "sp-east-1",
                "working_hours": shifts,
            },
        )
        assert response.status_code == 422, response.text
        assert problem_rule(response).startswith("working_hours")  # type: ignore[union-attr]
        if "." in shifts[0]["start"]:  # the offending field itself
            assert problem_rule(response) == "working_hours.0.start"

    # Updates are full replacements, guarded by If-Match; deactivation is its own event.
    update = {
        "name": "East dealer",
        "level": "service_point",
        "kind": "dealer",
        "parent_id": "rc-east",
        "region": "east",
        "postcodes": ["3100", "3101"],
        "reason": "took over 3101",
    }
    response = await admin.put(
        "/service-points/sp-east-2", json=update, headers={"If-Match": '"7"'}
    )
    assert response.status_code == 409 and problem_rule(response) == "expected_version"
    response = await admin.put(
        "/service-points/sp-east-2", json=update, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200 and response.json()["version"] == 2
    assert (await dispatch.get("/service-points/sp-east-2")).json()["postcodes"] == ["3100", "3101"]
    response = await admin.post("/technicians/t-c/deactivation", json={"reason": "on leave"})
    assert response.status_code == 200
    again = await admin.post("/technicians/t-c/deactivation", json={"reason": "on leave"})
    assert again.status_code == 409 and problem_rule(again) == "already_inactive"
    assert (await dispatch.get("/technicians/t-c")).json()["active"] is False
    assert (
        await admin.post("/technicians/t-c/activation", json={"reason": "back"})
    ).status_code == 200

    # Network history is on its own streams.
    member = await stream(platform, "t-c")
    assert [(e.stream_type, e.event_type) for e in member] == [
        ("technician", "TechnicianRegistered"),
        ("technician", "TechnicianDeactivated"),
        ("technician", "TechnicianReactivated"),
    ]
    assert member[1].actor.role == "admin"


async def test_a_repeated_replacement_records_nothing(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    """A PUT repeated without a key (a retry after a timeout) does what the first did:
    nothing new in the ledger, the version (and other clients' If-Match) unmoved."""
    await build_network(admin)
    point = {k: v for k, v in POINTS[3].items() if k != "id"}
    technician = {k: v for k, v in TECHNICIANS[0].items() if k != "id"}
    for path, body in (
        (f"/service-points/{POINTS[3]['id']}", point),
        ("/technicians/t-a", technician),
    ):
        first = await admin.put(path, json={**body, "name": "Renamed"})
        assert first.status_code == 200 and len(first.json()["events"]) == 1
        head = await ledger_head(platform)
        again = await admin.put(path, json={**body, "name": "Renamed", "reason": "retry"})
        assert again.status_code == 200 and again.json()["events"] == []
        assert again.json()["version"] == first.json()["version"]
        assert await ledger_head(platform) == head
        assert (await admin.get(path)).headers["etag"] == f'"{first.json()["version"]}"'


async def test_a_service_point_id_differing_only_in_case_is_refused(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    """Network ids compare without case (docs/dispatch.md; parts' stock locations use the
    same ids, compared so): `sp-e1` beside `SP-E1` is 409 naming `id`, nothing recorded."""
    await build_network(admin)
    point = {**POINTS[3], "id": "SP-E1"}
    assert (await admin.post("/service-points", json=point)).status_code == 201
    for spelling in ("sp-e1", "Sp-E1"):
        response = await admin.post("/service-points", json={**point, "id": spelling})
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["rule"] == "already_registered"
        assert body["detail"].startswith("id: ") and "SP-E1" in body["detail"]
        assert (await admin.get(f"/service-points/{spelling}")).status_code == 404
        assert await stream(platform, spelling) == []
    assert (await admin.get("/service-points/SP-E1")).status_code == 200


@pytest.mark.usefixtures("network")
async def test_a_member_with_work_under_way_is_not_taken_out_of_service(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
) -> None:
    """Deactivated with a ticket dispatched to it, a technician stayed its assignee: out
    of every suggestion, the ticket out of the queue, seen by no planner."""
    ticket = await open_ticket(intake)
    await dispatch_ok(dispatch, ticket, technician_id="t-a")
    leave = await admin.post("/technicians/t-a/deactivation", json={"reason": "left"})
    assert leave.status_code == 409 and problem_rule(leave) == "work_under_way"
    assert ticket in leave.json()["detail"]
    point = (await admin.get("/technicians/t-a")).json()["service_point_id"]
    described = (await admin.get(f"/service-points/{point}")).json()
    fields = ("name", "level", "kind", "parent_id", "region", "coverage")
    closing = {k: described[k] for k in fields if k in described} | {"active": False}
    closed = await admin.put(f"/service-points/{point}", json={**closing, "reason": "closed"})
    assert closed.status_code == 409 and problem_rule(closed) == "work_under_way", closed.text
    # Handed on, the ticket no longer holds it.
    await dispatch_ok(dispatch, ticket, technician_id="t-b", reason="t-a leaves")
    leave = await admin.post("/technicians/t-a/deactivation", json={"reason": "left"})
    assert leave.status_code == 200, leave.text


@pytest.mark.usefixtures("network")
async def test_who_holds_open_tickets_stays_in_their_region(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
) -> None:
    ticket = await open_ticket(intake)
    await dispatch_ok(dispatch, ticket, technician_id="t-a")
    t_a = (await admin.get("/technicians/t-a")).json()
    fields = ("name", "skills", "working_hours", "timezone")
    moved = {k: t_a[k] for k in fields} | {"service_point_id": "sp-west-1", "reason": "moved"}
    response = await admin.put("/technicians/t-a", json=moved)
    assert response.status_code == 409 and problem_rule(response) == "open_tickets_in_region"
    assert "east" in response.json()["detail"]
    # Within the region, or once nothing is open there, a move is fine.
    nearby = await admin.put("/technicians/t-a", json={**moved, "service_point_id": "sp-east-2"})
    assert nearby.status_code == 200, nearby.text
    point = {k: v for k, v in POINTS[4].items() if k != "id"}
    west = {**point, "region": "west", "parent_id": "rc-west", "reason": "sold"}
    response = await admin.put("/service-points/sp-east-2", json=west)
    assert response.status_code == 409 and problem_rule(response) == "open_tickets_in_region"
    async with service_client("dispatch", platform, region="west") as west_dispatcher:
        assert (await west_dispatcher.get("/technicians/t-a/assignments")).status_code == 404

        # Repaired, the ticket is no longer open: t-a moves west. Reopened by feedback it
        # is on t-a's list again — an east ticket, which west callers of the list never see.
        async with service_client("dispatch", platform, role="technician", subject="t-a") as t_a:
            await t_a.post(f"/tickets/{ticket}/visit", json={"findings": "belt"})
            await t_a.post(f"/tickets/{ticket}/repair", json={"outcome": "fixed"})
        t_a = (await admin.get("/technicians/t-a")).json()
        west_move = {k: t_a[k] for k in fields} | {"service_point_id": "sp-west-1"}
        assert (await admin.put("/technicians/t-a", json=west_move)).status_code == 200
        await record(platform, ticket, TicketReopened(reason="noisy", source="follow_up"))
        listed = await west_dispatcher.get("/technicians/t-a/assignments")
        assert listed.status_code == 200 and listed.json()["items"] == []
        every = (await admin.get("/technicians/t-a/assignments")).json()["items"]
        assert [i["ticket_id"] for i in every] == [ticket]

    # A technician works at a service point or a regional center, not at headquarters.
    response = await admin.post(
        "/technicians", json={"id": "t-hq", "name": "HQ", "service_point_id": "hq"}
    )
    assert response.status_code == 422 and problem_rule(response) == "service_point_id"


# --- assignment --------------------------------------------------------------------------


@pytest.mark.usefixtures("network")
async def test_suggestion_by_region_skill_and_load(
    intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    first = await open_ticket(intake)  # east, postcode 310000, washing_machines
    chosen = await dispatch_ok(dispatch, first)
    # t-a and t-b both cover it (whole region / postcode prefix 3100) with the skill and
    # no load; t-c lacks the skill, t-w is in the west. Ties go by the earliest slot, id.
    assert (chosen["technician_id"], chosen["service_point_id"]) == ("t-a", "sp-east-1")
    assert [c["technician_id"] for c in chosen["candidates"]] == ["t-a", "t-b"]
    assert "skill washing_machines" in chosen["reason"]
    assert "0 open assignment(s), the fewest among 2" in chosen["reason"]
    assert chosen["appointment_start"] == "2026-11-02T09:00:00Z"
    assert chosen["appointment_end"] == "2026-11-02T11:00:00Z"
    assert chosen["redispatch"] is False and chosen["status"] == "dispatched"

    second = await dispatch_ok(dispatch, await open_ticket(intake, product__serial_number="S2"))
    assert second["technician_id"] == "t-b"  # t-a now has one open assignment

    # Postcode 200000 is outside sp-east-2's prefixes: only t-a covers it, loaded or not.
    third = await open_ticket(intake, address__postcode="200000", product__serial_number="S3")
    assert (await dispatch_ok(dispatch, third))["technician_id"] == "t-a"
    fridge = await open_ticket(intake, product__product_line="fridges", product__serial_number="S4")
    assert (await dispatch_ok(dispatch, fridge))["technician_id"] == "t-c"
    west = await open_ticket(intake, address__region="west", product__serial_number="S5")
    assert (await dispatch_ok(dispatch, west))["technician_id"] == "t-w"

    oven = await open_ticket(intake, product__product_line="ovens", product__serial_number="S6")
    preview = await dispatch.get(f"/tickets/{oven}/candidates")
    assert preview.status_code == 409 and problem_rule(preview) == "no_technician_available"
    documented = (await dispatch.get("/openapi.json")).json()["paths"]
    assert "409" in documented["/tickets/{ticket_id}/candidates"]["get"]["responses"]
    response = await dispatch.post(f"/tickets/{oven}/dispatch", json={})
    assert response.status_code == 409 and problem_rule(response) == "no_technician_available"
    assert "0 skilled in ovens" in response.json()["detail"]
    # An unknown point is the request's error first, whoever could take the ticket.
    nowhere = await dispatch.post(f"/tickets/{oven}/dispatch", json={"service_point_id": "sp-x"})
    assert nowhere.status_code == 422, nowhere.text
    assert [e["field"] for e in nowhere.json()["errors"]] == ["service_point_id"]
    # The customer's postcode is theirs: the platform's texts never quote it.
    postcode = RECEIVE_EXAMPLE["address"]["postcode"]
    assert postcode not in response.json()["detail"] and "postcode" in response.json()["detail"]


@pytest.mark.usefixtures("network")
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_replicas_suggesting_at_once_count_each_others_assignments(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient, clock
) -> None:
    """Two dispatch processes on one database, each asked to choose at the same moment:
    the second counts the assignment the first made (both chose the least loaded t-a,
    each event's reason claiming 0 open assignments)."""
    tickets = [await open_ticket(intake, product__serial_number=f"R{n}") for n in range(4)]
    replica = Platform.from_settings(platform.settings, clock=clock)
    try:
        async with service_client("dispatch", replica) as other:
            chosen = await asyncio.gather(
                *(
                    dispatch_ok(client, ticket)
                    for client, ticket in zip((dispatch, other) * 2, tickets, strict=True)
                )
            )
    finally:
        await replica.close()
    reasons = [c["reason"] for c in chosen]
    assert sorted(c["technician_id"] for c in chosen) == ["t-a", "t-a", "t-b", "t-b"], reasons
    claimed = sorted(r.split(" open assignment")[0].rsplit(" ", 1)[-1] for r in reasons)
    assert claimed == ["0", "0", "1", "1"], reasons


async def test_suggestion_respects_working_hours(
    intake: httpx.AsyncClient, dispatch: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    weekend = {
        "id": "t-weekend",
        "name": "Wk",
        "service_point_id": "sp-east-1",
        "skills": ["washing_machines"],
        "timezone": "Asia/Shanghai",
        "working_hours": hours(("sat", "sun"), "09:00", "17:00"),
    }
    weekday = {
        "id": "t-weekday",
        "name": "Wd",
        "service_point_id": "sp-east-1",
        "skills": ["washing_machines"],
        "working_hours": hours(),
    }
    await build_network(admin, [weekend, weekday])
    ticket = await open_ticket(intake)

    # Saturday 7 Nov 10:00-12:00 Shanghai = 02:00-04:00 UTC: only the weekend technician.
    saturday = {
        "appointment_start": "2026-11-07T02:00:00Z",
        "appointment_end": "2026-11-07T04:00:00Z",
    }
    preview = await dispatch.get(f"/tickets/{ticket}/candidates")
    assert [c["technician_id"] for c in preview.json()["candidates"]] == [
        "t-weekday",
        "t-weekend",
    ]  # both idle; Monday 09:00 UTC comes first
    chosen = await dispatch_ok(dispatch, ticket, **saturday)
    assert chosen["technician_id"] == "t-weekend"
    assert "Sat 09:00-17:00 Asia/Shanghai" in chosen["reason"]

    # Monday 20:00-21:00 UTC: nobody works then.
    other = await open_ticket(intake, product__serial_number="S2")
    response = await dispatch.post(
        f"/tickets/{other}/dispatch",
        json={
            "appointment_start": "2026-11-02T20:00:00Z",
            "appointment_end": "2026-11-02T21:00:00Z",
        },
    )
    assert response.status_code == 409 and problem_rule(response) == "no_technician_available"
    # At a point asked for: the steps counted there, the point named.
    night = {
        "service_point_id": "sp-east-1",
        "appointment_start": "2026-11-02T20:00:00Z",
        "appointment_end": "2026-11-02T21:00:00Z",
    }
    response = await dispatch.post(f"/tickets/{other}/dispatch", json=night)
    assert response.status_code == 409 and problem_rule(response) == "no_technician_available"
    assert response.json()["detail"].startswith("at sp-east-1: 1 active service point(s)")
    assert "0 working during the requested window" in response.json()["detail"]

    # Without a window the weekday technician is next (and less loaded).
    assert (await dispatch_ok(dispatch, other))["technician_id"] == "t-weekday"

    # Bad windows are 422s naming the field.
    third = await open_ticket(intake, product__serial_number="S3")
    response = await dispatch.post(
        f"/tickets/{third}/dispatch",
        json={
            "appointment_start": "2026-11-03T10:00:00Z",
            "appointment_end": "2026-11-03T09:00:00Z",
        },
    )
    assert response.status_code == 422 and problem_rule(response) == "appointment_end"
    # One end alone: the 422 names the end that is missing.
    for given, missing in (
        ("appointment_start", "appointment_end"),
        ("appointment_end", "appointment_start"),
    ):
        alone = {given: "2026-11-03T10:00:00Z"}
        response = await dispatch.post(f"/tickets/{third}/dispatch", json=alone)
        assert response.status_code == 422 and problem_rule(response) == missing, response.text
    for start, end, field in (
        ("2026-11-03T10:00:00Z", "2126-11-03T11:00:00Z", "appointment_end"),  # a century
        ("2028-11-03T10:00:00Z", "2028-11-03T11:00:00Z", "appointment_start"),  # 2 years on
    ):
        window = {"appointment_start": start, "appointment_end": end}
        response = await dispatch.post(f"/tickets/{third}/dispatch", json=window)
        assert response.status_code == 422 and problem_rule(response) == field
    response = await dispatch.post(
        f"/tickets/{third}/dispatch", json={"service_point_id": "sp-nowhere"}
    )
    assert response.status_code == 422 and problem_rule(response) == "service_point_id"


@pytest.mark.usefixtures("network")
async def test_named_assignment(
    platform: Platform,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    admin: httpx.AsyncClient,
) -> None:
    ticket = await open_ticket(intake)
    for technician, status, rule in (
        ("t-w", 409, "region_mismatch"),
        ("t-nobody", 422, "technician_id"),
    ):
        response = await dispatch.post(
            f"/tickets/{ticket}/dispatch", json={"technician_id": technician}
        )
        assert response.status_code == status and problem_rule(response) == rule
    # A dispatcher confined to east: west's technician does not exist for it.
    async with service_client("dispatch", platform, role="dispatcher", region="east") as east:
        response = await east.post(f"/tickets/{ticket}/dispatch", json={"technician_id": "t-w"})
    assert (response.status_code, problem_rule(response)) == (422, "technician_id")
    assert response.json()["detail"] == "technician_id: no technician t-w", response.text
    response = await dispatch.post(
        f"/tickets/{ticket}/dispatch",
        json={"technician_id": "t-a", "service_point_id": "sp-east-2"},
    )
    assert response.status_code == 422 and problem_rule(response) == "service_point_id"
    await admin.post("/technicians/t-b/deactivation", json={"reason": "sick"})
    response = await dispatch.post(f"/tickets/{ticket}/dispatch", json={"technician_id": "t-b"})
    assert response.status_code == 409 and problem_rule(response) == "technician_inactive"

    # The dispatcher may override the skill; the reason says so.
    named = await dispatch_ok(dispatch, ticket, technician_id="t-c", reason="customer asked for C")
    assert named["technician_id"] == "t-c" and named["candidates"] == []
    assert named["reason"].startswith("dispatcher's note: customer asked for C")
    assert "named by the dispatcher" in named["reason"]
    assert "override: no washing_machines skill" in named["reason"]


@pytest.mark.usefixtures("network")
async def test_redispatch_keeps_history_and_reason(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    ticket = await open_ticket(intake)
    await dispatch_ok(dispatch, ticket)
    response = await dispatch.post(f"/tickets/{ticket}/dispatch", json={"technician_id": "t-b"})
    assert response.status_code == 422 and problem_rule(response) == "reason"
    again = await dispatch_ok(dispatch, ticket, technician_id="t-b", reason="t-a called in sick")
    assert again["redispatch"] is True and again["reason"].startswith(
        "re-dispatch: t-a called in sick"
    )

    history = (await dispatch.get(f"/tickets/{ticket}/dispatches")).json()["items"]
    assert [(h["technician_id"], h["redispatch"]) for h in history] == [
        ("t-a", False),
        ("t-b", True),
    ]
    assert "suggested" in history[0]["reason"] and history[0]["actor"]["role"] == "dispatcher"
    assert (await dispatch.get("/technicians/t-a/assignments")).json()["items"] == []
    assert [
        i["ticket_id"] for i in (await dispatch.get("/technicians/t-b/assignments")).json()["items"]
    ] == [ticket]

    # A dispatcher of another region does not see the ticket.
    async with service_client("dispatch", platform, region="west") as west:
        response = await west.post(
            f"/tickets/{ticket}/dispatch", json={"technician_id": "t-w", "reason": "x"}
        )
        assert response.status_code == 404


# --- visit and repair --------------------------------------------------------------------


@pytest.mark.usefixtures("network")
async def test_lifecycle_order_is_enforced(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    undiagnosed = await open_ticket(intake, path=None)
    response = await dispatch.post(f"/tickets/{undiagnosed}/dispatch", json={})
    assert response.status_code == 409 and problem_rule(response) == "not_diagnosed"

    ticket = await open_ticket(intake, product__serial_number="S2")
    repair = {"outcome": "fixed", "labour_minutes": 40}
    async with (
        service_client("dispatch", platform, role="technician", subject="t-a") as tech_a,
        service_client("dispatch", platform, role="technician", subject="t-b") as tech_b,
    ):
        response = await dispatch.post(f"/tickets/{ticket}/repair", json=repair)
        assert response.status_code == 409 and problem_rule(response) == "not_dispatched"
        response = await dispatch.post(f"/tickets/{ticket}/visit", json={"findings": "x"})
        assert response.status_code == 409 and problem_rule(response) == "not_dispatched"
        await dispatch_ok(dispatch, ticket, technician_id="t-a")
        response = await tech_a.post(f"/tickets/{ticket}/repair", json=repair)
        assert response.status_code == 409 and problem_rule(response) == "visit_required"
        # Only the assigned technician checks in.
        response = await tech_b.post(f"/tickets/{ticket}/visit", json={"findings": "x"})
        assert response.status_code == 404
        response = await tech_a.post(
            f"/tickets/{ticket}/visit",
            json={"arrived_at": "2026-11-02T10:00:00Z", "findings": "motor burnt"},
        )
        assert response.status_code == 422 and problem_rule(response) == "arrived_at"  # future
        response = await tech_a.post(
            f"/tickets/{ticket}/visit",
            json={"arrived_at": "2026-11-01T10:00:00+08:00", "findings": "motor burnt"},
        )
        assert response.status_code == 422 and problem_rule(response) == "arrived_at"  # early
        response = await tech_a.post(f"/tickets/{ticket}/visit", json={"findings": "motor burnt"})
        assert response.status_code == 200 and response.json()["status"] == "visited"
        response = await tech_a.post(f"/tickets/{ticket}/repair", json={"outcome": "replaced"})
        assert response.status_code == 422 and problem_rule(response) == "parts_used"
        for amount in (1e300, 12.345):
            response = await tech_a.post(
                f"/tickets/{ticket}/repair", json={"outcome": "fixed", "cost_amount": amount}
            )
            assert response.status_code == 422 and problem_rule(response) == "cost_amount"
        many = {"outcome": "fixed", "parts_used": [{"part_number": "BELT-1", "quantity": 101}]}
        response = await tech_a.post(f"/tickets/{ticket}/repair", json=many)
        assert response.status_code == 422 and problem_rule(response) == "parts_used.0.quantity"
        bad_part = {"outcome": "fixed", "parts_used": [{"part_number": "unknown part #1"}]}
        response = await tech_a.post(f"/tickets/{ticket}/repair", json=bad_part)
        assert response.status_code == 422, response.text
        assert problem_rule(response) == "parts_used.0.part_number"
        response = await tech_a.post(
            f"/tickets/{ticket}/repair",
            json={
                "outcome": "replaced",
                "labour_minutes": 75,
                "parts_used": [
                    {
                        "part_number": "MOTOR-1",
                        "new_serial": "N1",
                        "old_serial": "O1",
                        "under_warranty": True,
                    }
                ],
            },
        )
        assert response.status_code == 200 and response.json()["status"] == "repaired"
        response = await tech_a.post(f"/tickets/{ticket}/visit", json={"findings": "again"})
        assert response.status_code == 409 and problem_rule(response) == "already_repaired"
        response = await tech_a.post(f"/tickets/{ticket}/repair", json=repair)
        assert response.status_code == 409 and problem_rule(response) == "already_repaired"

    repaired = (await stream(platform, ticket))[-1]
    assert repaired.event_type == "TicketRepaired" and repaired.actor.subject == "t-a"
    assert repaired.payload["technician_id"] == "t-a"
    assert repaired.payload["cost_borne_by"] == "warranty"  # in warranty by default
    assert repaired.payload["parts_used"][0]["old_serial"] == "O1"

    # No visit on a closed ticket.
    await record(platform, ticket, TicketClosed())
    response = await dispatch.post(f"/tickets/{ticket}/visit", json={"findings": "x"})
    assert response.status_code == 409 and problem_rule(response) == "ticket_closed"
    response = await dispatch.post(
        f"/tickets/{ticket}/dispatch", json={"reason": "x", "technician_id": "t-a"}
    )
    assert response.status_code == 409 and problem_rule(response) == "ticket_closed"


@pytest.mark.usefixtures("network")
async def test_remote_guidance_is_repaired_without_a_visit(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    ticket = await open_ticket(intake, path="remote_guidance", warranty_status="extended")
    response = await dispatch.post(
        f"/tickets/{ticket}/repair",
        json={"outcome": "fixed", "notes": "reset the control board by phone"},
    )
    assert response.status_code == 200, response.text
    last = (await stream(platform, ticket))[-1]
    assert last.payload["technician_id"] is None and last.payload["cost_borne_by"] == "warranty"


@pytest.mark.usefixtures("network")
async def test_work_list_is_ordered_by_deadline_and_flags_reopened(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    tickets = {}
    for n, complexity in enumerate(("complex", "simple", "general")):
        tickets[complexity] = await open_ticket(
            intake, complexity=complexity, product__serial_number=f"S{n}"
        )
        await dispatch_ok(dispatch, tickets[complexity], technician_id="t-a")
    async with (
        service_client("dispatch", platform, role="technician", subject="t-a") as tech_a,
        service_client("dispatch", platform, role="technician", subject="t-b") as tech_b,
    ):
        items = (await tech_a.get("/technicians/t-a/assignments")).json()["items"]
        assert [i["ticket_id"] for i in items] == [
            tickets["simple"],
            tickets["general"],
            tickets["complex"],
        ]
        assert items[0]["deadline"] == "2026-11-02T13:00:00Z"  # received 09:00 + 4 h
        assert (await tech_b.get("/technicians/t-a/assignments")).status_code == 404

        # Feedback reopens the repaired simple ticket with an escalation: still on t-a's
        # list, flagged, and in the dispatcher's queue to be dispatched again.
        simple = tickets["simple"]
        await tech_a.post(f"/tickets/{simple}/visit", json={"findings": "loose belt"})
        await tech_a.post(f"/tickets/{simple}/repair", json={"outcome": "fixed"})
        await record(platform, simple, TicketReopened(reason="still noisy", source="follow_up"))
        await platform.runner.catch_up(TICKET_FLAGS)
        items = (await tech_a.get("/technicians/t-a/assignments")).json()["items"]
    first = items[0]
    assert (first["ticket_id"], first["status"], first["reopened"], first["escalated"]) == (
        simple,
        "reopened",
        True,
        True,
    )
    assert first["escalation_cause"] == "reopened"
    await open_ticket(intake, path="remote_guidance", product__serial_number="S9")
    queue = (await dispatch.get("/dispatch-queue")).json()["items"]
    assert [q["ticket_id"] for q in queue] == [simple]  # not the remote-guidance ticket
    again = await dispatch_ok(dispatch, simple, reason="reopened: noise persists")
    assert again["redispatch"] is True


@pytest.mark.usefixtures("network")
async def test_the_dispatch_queue_pages_with_a_keyset_cursor(
    intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    """The queue pages as the other lists do: `limit` at a time, `next_cursor` (and the
    `Link` header) to the next page, null on the last; deadlines that tie (tickets received
    together) are ordered by ticket id, so no page repeats or skips one."""
    for n in range(5):
        await open_ticket(
            intake,
            complexity="complex" if n % 2 else "general",
            product__serial_number=f"Q{n}",
        )
    whole = (await dispatch.get("/dispatch-queue")).json()
    assert whole["next_cursor"] is None and len(whole["items"]) == 5
    paged: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    pages = 0
    while True:
        answer = await dispatch.get("/dispatch-queue", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        paged += [item["ticket_id"] for item in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            assert "link" not in answer.headers
            break
        assert len(page["items"]) == 2
        assert f"cursor={page['next_cursor']}" in answer.headers["link"]
        assert answer.headers["link"].endswith('rel="next"')
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert pages == 3 and paged == [item["ticket_id"] for item in whole["items"]]
    deadlines = [item["deadline"] for item in whole["items"]]
    assert deadlines == sorted(deadlines) and len(set(deadlines)) < len(deadlines)


@pytest.mark.usefixtures("network")
async def test_idempotent_retry_and_stale_if_match(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    ticket = await open_ticket(intake)  # version 2 after the diagnosis
    stale = await dispatch.post(f"/tickets/{ticket}/dispatch", json={}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409 and problem_rule(stale) == "expected_version"

    key = {"Idempotency-Key": "dispatch-0001", "If-Match": '"2"'}
    first = await dispatch.post(f"/tickets/{ticket}/dispatch", json={}, headers=key)
    retry = await dispatch.post(f"/tickets/{ticket}/dispatch", json={}, headers=key)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    assert first.headers["etag"] == '"3"'
    other = await dispatch.post(
        f"/tickets/{ticket}/dispatch", json={"technician_id": "t-b"}, headers=key
    )
    assert other.status_code == 422
    types = [e.event_type for e in await stream(platform, ticket)]
    assert types.count("TicketDispatched") == 1
    response = await dispatch.post("/service-points", json=POINTS[0])
    assert response.status_code == 403  # dispatchers do not manage the network


@pytest.mark.usefixtures("network")
async def test_roles(platform: Platform, intake: httpx.AsyncClient) -> None:
    ticket = await open_ticket(intake)
    async with (
        service_client("dispatch", platform, role="auditor") as auditor,
        service_client("dispatch", platform, role="technician", subject="t-a") as tech_a,
        service_client("dispatch", platform, role="call_center_agent") as agent,
        service_client("dispatch", platform, role="regional_center", region="west") as rc_west,
    ):
        for client in (auditor, tech_a, agent):
            response = await client.post(f"/tickets/{ticket}/dispatch", json={})
            assert response.status_code == 403, response.text
        assert (
            await auditor.post(f"/tickets/{ticket}/visit", json={"findings": "x"})
        ).status_code == 403
        assert (await agent.get("/technicians")).status_code == 403
        assert (await auditor.get("/technicians/t-a/assignments")).status_code == 200
        assert (await auditor.get("/dispatch-queue")).json()["items"][0]["ticket_id"] == ticket
        assert (await rc_west.get("/dispatch-queue")).json()["items"] == []
        assert (await rc_west.get("/technicians/t-a/assignments")).status_code == 404
        assert (await rc_west.get(f"/tickets/{ticket}/dispatches")).status_code == 404
        assert (await tech_a.get("/technicians/t-a")).status_code == 200
        assert (await tech_a.get("/technicians/t-b")).status_code == 404
        response = await auditor.get("/tickets/00000000-0000-0000-0000-000000000000/dispatches")
        assert response.status_code == 404


@pytest.mark.usefixtures("network")
async def test_work_lists_mask_the_street_address_for_roles_that_see_it_masked(
    platform: Platform, intake: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    """docs/personal-data.md: dispatcher, technician and admin see the street address in
    full; regional center and auditor see it masked — in the work lists too."""
    assigned = await open_ticket(intake)
    await dispatch_ok(dispatch, assigned, technician_id="t-a")
    await open_ticket(intake, product__serial_number="S2")  # waits in the queue
    full, masked = "1 Garden Road", "***"
    async with (
        service_client("dispatch", platform, role="admin") as admin,
        service_client("dispatch", platform, role="technician", subject="t-a") as tech_a,
        service_client("dispatch", platform, role="auditor") as auditor,
        service_client("dispatch", platform, role="regional_center", region="east") as rc,
    ):
        for client, expected in ((dispatch, full), (admin, full), (auditor, masked), (rc, masked)):
            queue = (await client.get("/dispatch-queue")).json()["items"]
            assert [q["address_line"] for q in queue] == [expected]
        for client, expected in (
            (dispatch, full),
            (admin, full),
            (tech_a, full),
            (auditor, masked),
            (rc, masked),
        ):
            items = (await client.get("/technicians/t-a/assignments")).json()["items"]
            assert [(i["ticket_id"], i["address_line"]) for i in items] == [(assigned, expected)]
    # What is masked is the view: the ticket's city and region still route the work.
    assert items[0]["region"] == "east"


async def test_an_unknown_ticket_is_404_for_candidates_and_dispatch(
    dispatch: httpx.AsyncClient, network: None
) -> None:
    # The points' calendars are looked up only for a ticket there is (it was a 500).
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await dispatch.get(f"/tickets/{unknown}/candidates")).status_code == 404
    assert (await dispatch.post(f"/tickets/{unknown}/dispatch", json={})).status_code == 404


@pytest.mark.parametrize("backend", ["postgres"])
async def test_case_variants_registered_at_once_make_one_service_point(
    platform: Platform, admin: httpx.AsyncClient, clock: ManualClock
) -> None:
    """`SP-Cn` and `sp-cn` registered at once by two replicas (two streams, two
    transactions): the second waits for the first's id and is refused — never two
    points of one id."""
    await build_network(admin)
    point = {**POINTS[3], "id": "SP-C1"}
    ids = [f"sp-c{n}" for n in range(8)]
    replica = Platform.from_settings(platform.settings, clock=clock)
    try:
        async with service_client("dispatch", replica, role="admin") as other:
            answers = await asyncio.gather(
                *(admin.post("/service-points", json={**point, "id": i.upper()}) for i in ids),
                *(other.post("/service-points", json={**point, "id": i}) for i in ids),
            )
    finally:
        await replica.close()
    assert sorted(a.status_code for a in answers) == [201] * 8 + [409] * 8
    listed = [p["id"].lower() for p in (await admin.get("/service-points")).json()["items"]]
    assert sorted(i for i in listed if i in ids) == ids


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_technicians_load_is_counted_without_walking_their_history(
    platform: Platform,
) -> None:
    """Every assignment counts the candidates' open tickets: by (technician, status), not
    through each technician's every ticket since they started."""
    from services.dispatch.read_models import open_loads
    from tests.support.plans import explained, recorded_selects

    assert platform.db.sqlite_engine is not None
    with recorded_selects(platform.db.sqlite_engine) as statements:
        await platform.db.read(lambda c: open_loads(c, ["t-1", "t-2"], except_ticket="x"))
    ((statement, parameters),) = statements
    plan = await platform.db.read(lambda c: explained(c, statement, parameters))
    assert plan == [
        "SEARCH ticket_state USING INDEX ix_ticket_state_technician_id_status "
        "(technician_id=? AND status=?)"
    ], plan


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_regions_a_point_or_technician_holds_are_found_by_their_indexes(
    platform: Platform,
) -> None:
    """Changing a service point or a technician checks the regions of the open tickets
    they hold: through the point's and its technicians' (…, status) indexes, never a walk
    through every open ticket."""
    from services.dispatch.read_models import open_ticket_regions
    from tests.support.plans import explained, recorded_selects

    assert platform.db.sqlite_engine is not None
    with recorded_selects(platform.db.sqlite_engine) as statements:
        await platform.db.read(lambda c: open_ticket_regions(c, service_point_id="sp-1"))
        await platform.db.read(lambda c: open_ticket_regions(c, technician_id="t-1"))
    plans = [await platform.db.read(lambda c, s=s, p=p: explained(c, s, p)) for s, p in statements]
    seeks = [d for plan in plans for d in plan if d.startswith(("SEARCH ticket", "SCAN ticket"))]
    assert seeks == [
        "SEARCH ticket_state USING INDEX ix_ticket_state_service_point_id_status "
        "(service_point_id=? AND status=?)",
        "SEARCH ticket_state USING INDEX ix_ticket_state_technician_id_status "
        "(technician_id=? AND status=?)",
        "SEARCH ticket_state USING INDEX ix_ticket_state_technician_id_status "
        "(technician_id=? AND status=?)",
    ], plans


async def test_an_admin_of_one_region_cannot_take_another_regions_technician(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    """A region-bound admin changing a technician of another region — even to move it into
    its own — finds no such technician (404, as a read): it took it over with a 200."""
    from tests.support.dispatch_network import TECHNICIANS

    await build_network(admin)
    west_tech = next(t for t in TECHNICIANS if t["id"] == "t-w")
    taken = {**west_tech, "name": "Taken", "service_point_id": "sp-east-1"}
    taken.pop("id")
    async with service_client("dispatch", platform, role="admin", region="east") as east:
        refused = await east.put("/technicians/t-w", json=taken)
        assert refused.status_code == 404, refused.text
        assert refused.json()["rule"] == "technician_not_found"
        own = next(t for t in TECHNICIANS if t["id"] == "t-a")
        renamed = {**{k: v for k, v in own.items() if k != "id"}, "name": "A. Renamed"}
        assert (await east.put("/technicians/t-a", json=renamed)).status_code == 200
        # Its own technician moved out of its region: 403 naming region (as for a service
        # point), not a technician it can read answered "no such technician".
        away = await east.put("/technicians/t-a", json={**renamed, "service_point_id": "sp-west-1"})
        assert away.status_code == 403, away.text
        assert [e["field"] for e in away.json()["errors"]] == ["region"]
    tech = (await admin.get("/technicians/t-w")).json()
    assert (tech["name"], tech["region"]) == (west_tech["name"], "west")
    assert (await admin.get("/technicians/t-a")).json()["region"] == "east"


async def test_a_technician_id_differing_only_in_case_is_refused(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    """Technician ids are their sign-in subjects: `T-A` beside `t-a` is 409 naming `id`."""
    from tests.support.dispatch_network import TECHNICIANS

    await build_network(admin)
    own = next(t for t in TECHNICIANS if t["id"] == "t-a")
    response = await admin.post("/technicians", json={**own, "id": "T-A"})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["rule"] == "already_registered" and "t-a" in body["detail"]
    assert (await admin.get("/technicians/T-A")).status_code == 404
    assert await stream(platform, "T-A") == []

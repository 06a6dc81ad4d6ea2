"""The SLA clock over HTTP on SQLite: calendars and policies (versions, .ics import, bad
input), a ticket's deadline in business hours, pause and resume, the timeline and
``as_of``, re-evaluation, compliance in business time, the automatic pause for parts, and
what-if (which writes nothing). Racing schedulers: tests/test_sla_ladder.py."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from textwrap import indent
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.dispatch.jobs import check_sla
from services.dispatch.projections import SLA_CLOCKS
from services.dispatch.reactors import PartsPauseReactor
from services.dispatch.sla_schemas import CALENDAR_EXAMPLE, ICS_EXAMPLE
from services.dispatch.tables import sla_clocks as SLA_CLOCKS_TABLE
from services.feedback.projections import COMPLIANCE
from shared.app.cli import main as cli_main
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from tests.support.clients import service_client
from tests.support.dispatch_network import build_network, open_ticket, problem_rule, ticket_body
from tests.support.ledger import ledger_head
from tests.support.lifecycle import Lifecycle

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

FRIDAY_1730_SHANGHAI = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
YEAR_START = date(2027, 1, 1)
WORKDAYS = ("mon", "tue", "wed", "thu", "fri")
NINE_TO_SIX = {
    "name": "Hangzhou outlets",
    "timezone": "Asia/Shanghai",
    "hours": [{"weekday": d, "start": "09:00", "end": "18:00"} for d in WORKDAYS],
}
POLICY = {
    "name": "Business hours",
    "response": {"normal": {"hours": 4}, "urgent": {"hours": 2}, "critical": {"hours": 0.5}},
    "region_calendars": {"east": "hz"},
}


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("dispatch", platform, role="admin") as client:
        yield client


async def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def define_terms(admin: httpx.AsyncClient, **policy: Any) -> None:
    await ok(await admin.put("/calendars/hz", json=NINE_TO_SIX))
    await ok(await admin.put("/sla-policies/standard", json={**POLICY, **policy}))


async def receive(intake: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    return await ok(await intake.post("/tickets", json=ticket_body(**body)), 201)


# --- terms ------------------------------------------------------------------------------


async def test_a_targets_own_calendar_is_checked_for_that_target_only(
    admin: httpx.AsyncClient,
) -> None:
    # A target's own calendar is checked for that target only: one hour a week is enough
    # for a 1-hour response, not for 400 hours (the other targets run on 24×7 meanwhile).
    monday = {
        "name": "m",
        "timezone": "UTC",
        "hours": [{"weekday": "mon", "start": "09:00", "end": "10:00"}],
    }
    await ok(await admin.put("/calendars/monday-hour", json=monday))
    await ok(await admin.put("/calendars/hz", json=NINE_TO_SIX))
    sparse = {**POLICY["response"], "normal": {"hours": 1, "calendar": "monday-hour"}}
    await ok(await admin.put("/sla-policies/sparse", json={**POLICY, "response": sparse}))
    too_much = {**sparse, "normal": {"hours": 400, "calendar": "monday-hour"}}
    response = await admin.put("/sla-policies/sparse", json={**POLICY, "response": too_much})
    assert (response.status_code, problem_rule(response)) == (422, "response.normal")
    assert "on calendar monday-hour" in response.json()["detail"]


async def test_calendars_and_policies_are_versioned_and_bad_input_writes_nothing(
    platform: Platform, admin: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    first = await ok(await admin.put("/calendars/hz", json=CALENDAR_EXAMPLE))
    assert (first["id"], first["version"]) == ("hz", 1)
    before = await ledger_head(platform)
    bad = [
        (
            {
                **NINE_TO_SIX,
                "hours": [
                    *NINE_TO_SIX["hours"],
                    {"weekday": "mon", "start": "17:00", "end": "20:00"},
                ],
            },
            "hours",
        ),
        ({**NINE_TO_SIX, "timezone": "Mars/Olympus"}, "timezone"),
        # Closed for longer than the horizon: deadlines there would be unreachable.
        (
            {
                **NINE_TO_SIX,
                "holidays": [{"day": str(YEAR_START + timedelta(n))} for n in range(370)],
            },
            "holidays",
        ),
    ]
    for body, field in bad:
        response = await admin.put("/calendars/hz", json=body)
        assert (response.status_code, problem_rule(response)) == (422, field), response.text
    # A policy naming a calendar nobody defined, or missing a target.
    response = await admin.put(
        "/sla-policies/standard", json={**POLICY, "region_calendars": {"east": "nope"}}
    )
    assert (response.status_code, problem_rule(response)) == (422, "calendars")
    response = await admin.put(
        "/sla-policies/standard", json={**POLICY, "response": {"normal": {"hours": 4}}}
    )
    assert (response.status_code, problem_rule(response)) == (422, "response")
    response = await admin.put(
        "/sla-policies/standard",
        json={
            **POLICY,
            "response": {
                "normal": {"hours": 8000},
                "urgent": {"hours": 2},
                "critical": {"hours": 1},
            },
        },
    )
    assert (response.status_code, problem_rule(response)) == (422, "response.normal")
    assert "unreachable" in response.json()["detail"]
    assert await ledger_head(platform) == before  # nothing written

    second = await ok(await admin.put("/calendars/hz", json={**NINE_TO_SIX, "reason": "no lunch"}))
    assert second["version"] == 2
    head = await ledger_head(platform)
    same = await ok(await admin.put("/calendars/hz", json={**NINE_TO_SIX, "reason": "retry"}))
    assert (same["version"], same["events"]) == (2, [])  # a repeat records nothing
    assert await ledger_head(platform) == head
    old = await ok(await dispatch.get("/calendars/hz", params={"version": 1}))
    assert len(old["description"]["hours"]) == 10
    beyond = await dispatch.get("/calendars/hz", params={"version": 9})
    assert beyond.status_code == 404
    assert beyond.json()["detail"] == "calendar hz has no version 9 (latest 2)"
    listed = await ok(await dispatch.get("/calendars"))
    assert [(c["id"], c["version"]) for c in listed["items"]] == [("hz", 2)]
    await ok(await admin.put("/sla-policies/standard", json=POLICY))
    policies = await ok(await dispatch.get("/sla-policies"))
    assert policies["items"][0]["description"]["region_calendars"] == {"east": "hz"}
    assert (await dispatch.get("/sla-policies/nope")).status_code == 404


async def test_holidays_import_from_an_icalendar_file(
    admin: httpx.AsyncClient, dispatch: httpx.AsyncClient
) -> None:
    assert (await admin.post("/calendars/hz/ics", json={"ics": ICS_EXAMPLE})).status_code == 404
    defined = await ok(await admin.put("/calendars/hz", json=NINE_TO_SIX))
    assert set(defined) == {"id", "version", "events"}  # the import's counts are the import's
    ics = ICS_EXAMPLE.replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\r\nDTSTART:20271010T090000Z\r\nSUMMARY:a meeting\r\nEND:VEVENT\r\n"
        "END:VCALENDAR",
    )
    imported = await ok(await admin.post("/calendars/hz/ics", json={"ics": ics}))
    assert (imported["version"], imported["holidays_imported"]) == (2, 7)
    assert (imported["working_days_imported"], imported["skipped"]) == (1, ["a meeting"])
    calendar = (await ok(await dispatch.get("/calendars/hz")))["description"]
    assert [h["day"] for h in calendar["holidays"]][:2] == ["2027-10-01", "2027-10-02"]
    assert calendar["working_days"] == [
        {"day": "2027-09-26", "hours_of": "mon", "name": "补班 (working day)"}
    ]
    response = await admin.post("/calendars/hz/ics", json={"ics": "not a calendar"})
    assert (response.status_code, problem_rule(response)) == (422, "ics")
    # A day the calendar names again without a name keeps its name; an all-day start
    # lasting hours is a timed event (skipped), not a holiday.
    again = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20271001\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20271111\r\nDURATION:PT5H\r\n"
        "SUMMARY:an afternoon off\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\n"
        "DTSTART;VALUE=DATE:20271225\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    imported = await ok(await admin.post("/calendars/hz/ics", json={"ics": again}))
    assert imported["skipped"] == ["an afternoon off"]
    calendar = (await ok(await dispatch.get("/calendars/hz")))["description"]
    days = {h["day"]: h["name"] for h in calendar["holidays"]}
    assert days["2027-10-01"] == "National Day" and "2027-11-11" not in days
    assert days["2027-12-25"] == "Christmas"
    # Nothing all-day to import, the same days again: refused, the skipped events named;
    # a recurring event (RRULE, RDATE) is skipped; a file cut off is refused whole.
    timed = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20271010T090000Z\r\nSUMMARY:a meeting\r\n"
        "END:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270101\r\nRDATE;VALUE=DATE:"
        "20280101\r\nSUMMARY:New Year\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    response = await admin.post("/calendars/hz/ics", json={"ics": timed})
    assert (response.status_code, problem_rule(response)) == (422, "ics")
    assert "a meeting, New Year" in response.json()["detail"]
    response = await admin.post("/calendars/hz/ics", json={"ics": again})
    assert (response.status_code, problem_rule(response)) == (409, "unchanged")
    assert "skipped: an afternoon off" in response.json()["detail"]
    for cut in (again[: again.rindex("END:VEVENT")], again[: again.rindex("END:VCALENDAR")]):
        response = await admin.post("/calendars/hz/ics", json={"ics": cut})
        assert (response.status_code, problem_rule(response)) == (422, "ics")
        assert "cut off" in response.json()["detail"]
    assert (await ok(await dispatch.get("/calendars/hz")))["version"] == 3


# --- a ticket's clock --------------------------------------------------------------------


async def test_friday_evening_ticket_is_due_monday_and_keeps_its_calendar_version(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await define_terms(admin)
    clock.set(FRIDAY_1730_SHANGHAI)
    ticket = await receive(intake)
    # 17:30-18:00 on Friday, then 09:00-12:30 on Monday (Asia/Shanghai).
    assert ticket["sla"]["response_due_at"] == "2026-11-23T04:30:00Z"
    timeline = await ok(await dispatch.get(f"/tickets/{ticket['ticket_id']}/sla"))
    assert timeline["policy"] == {
        "policy_id": "standard",
        "policy_version": 1,
        "calendar_versions": {"hz": 1},
    }
    (response,) = timeline["deadlines"]
    assert (response["due_at"], response["status"], response["target_minutes"]) == (
        "2026-11-23T04:30:00Z",
        "running",
        240.0,
    )
    # Monday becomes a holiday: new tickets are due Tuesday; this one keeps its version
    # until re-evaluated on purpose.
    await ok(
        await admin.put("/calendars/hz", json={**NINE_TO_SIX, "holidays": [{"day": "2026-11-23"}]})
    )
    later = await receive(intake)
    assert later["sla"]["response_due_at"] == "2026-11-24T04:30:00Z"
    view = await ok(await intake.get(f"/tickets/{ticket['ticket_id']}"))
    assert view["sla"]["response_due_at"] == "2026-11-23T04:30:00Z"
    path = f"/tickets/{ticket['ticket_id']}/sla/re-evaluation"
    await ok(await dispatch.post(path, json={"reason": "Monday is a holiday after all"}))
    again = await dispatch.post(path, json={"reason": "twice"})
    assert (again.status_code, problem_rule(again)) == (409, "already_current")
    view = await ok(await intake.get(f"/tickets/{ticket['ticket_id']}"))
    assert view["sla"]["response_due_at"] == "2026-11-24T04:30:00Z"
    assert view["sla"]["response_status"] == "running"


async def test_a_re_evaluation_leaves_a_met_or_passed_deadline_standing(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    """A passed deadline stands (as for a re-diagnosis or a re-dispatch): moving a
    breached ticket onto kinder terms keeps its breach — in the clock, the ticket and
    the compliance checklist — and a response met in time is not judged again."""
    tight = {**POLICY["response"], "normal": {"hours": 0.05, "calendar": "24x7"}}
    await define_terms(admin, response=tight)
    clock.set(FRIDAY_1730_SHANGHAI)
    breached = (await receive(intake))["ticket_id"]
    answered = (await receive(intake, product__serial_number="SN-2"))["ticket_id"]
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    await ok(await intake.post(f"/tickets/{answered}/diagnosis", json=diagnosis))
    clock.advance(minutes=10)  # past the 3-minute response target
    await check_sla(platform)
    await ok(await admin.put("/sla-policies/standard", json=POLICY))  # 4 business hours
    for tid in (breached, answered):
        await ok(await dispatch.post(f"/tickets/{tid}/sla/re-evaluation", json={"reason": "r"}))
    timeline = await ok(await dispatch.get(f"/tickets/{breached}/sla"))
    (response,) = timeline["deadlines"]
    assert (response["status"], response["due_at"]) == ("breached", "2026-11-20T09:33:00Z")
    assert timeline["policy"]["policy_version"] == 2
    assert all(step["reached"] for step in response["steps"] if step["recorded"])
    view = await ok(await intake.get(f"/tickets/{breached}"))
    assert view["sla"]["response_status"] == "breached"
    await ok(await intake.post(f"/tickets/{breached}/diagnosis", json=diagnosis))
    (response, _) = (await ok(await dispatch.get(f"/tickets/{answered}/sla")))["deadlines"]
    assert response["status"] == "met"
    await platform.runner.catch_up(COMPLIANCE)
    late = await ok(await feedback.get(f"/compliance/tickets/{breached}"))
    assert late["checklist"]["responded_within_sla"]["status"] == "false"
    in_time = await ok(await feedback.get(f"/compliance/tickets/{answered}"))
    assert in_time["checklist"]["responded_within_sla"]["status"] == "true"


async def test_a_correction_that_moves_the_ticket_keeps_its_deadlines(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    """The calendars are the region's the ticket was received in: moved to a region with
    no calendar of its own (24×7), it is not suddenly breached — the clock, the view, the
    list and the next command's answer keep the deadline the receipt recorded."""
    await define_terms(admin)
    clock.set(FRIDAY_1730_SHANGHAI)
    ticket = await receive(intake)
    tid, due = ticket["ticket_id"], "2026-11-23T04:30:00Z"
    assert ticket["sla"]["response_due_at"] == due
    async with service_client("intake", platform, role="customer_relations") as relations:
        moved = {"reason": "moved", "address": {"line": "9 Road", "region": "west"}}
        answer = await ok(await relations.patch(f"/tickets/{tid}/contact", json=moved))
    assert answer["sla"]["response_due_at"] == due
    clock.advance(hours=5)  # past a 4 h deadline on 24×7, well before Monday's
    await check_sla(platform)
    timeline = await ok(await dispatch.get(f"/tickets/{tid}/sla"))
    (response,) = timeline["deadlines"]
    assert (response["due_at"], response["status"]) == (due, "running")
    async with service_client("intake", platform, role="dispatcher", region="west") as west:
        view = await ok(await west.get(f"/tickets/{tid}"))
        (listed,) = (await west.get("/tickets")).json()["items"]
    assert view["sla"]["response_due_at"] == listed["sla"]["response_due_at"] == due
    assert view["sla"]["response_status"] == "running"


async def test_a_suggested_appointment_skips_the_holidays_of_the_points_calendar(
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    shanghai_hours = {
        "id": "t-sh",
        "name": "Sh",
        "service_point_id": "sp-east-1",
        "skills": ["washing_machines"],
        "timezone": "Asia/Shanghai",
        "working_hours": [{"weekday": d, "start": "09:00", "end": "18:00"} for d in WORKDAYS],
    }
    await build_network(admin, [shanghai_hours])
    clock.set(datetime(2026, 11, 19, 20, 0, tzinfo=UTC))  # Friday 04:00 in Shanghai
    await define_terms(admin)
    ticket = await open_ticket(intake)
    first = await ok(await dispatch.get(f"/tickets/{ticket}/candidates"))
    assert first["candidates"][0]["appointment_start"] == "2026-11-20T01:00:00Z"  # Fri 09:00

    # Friday becomes a holiday of the region's calendar: the point is closed that day, so
    # the suggestion moves to Monday 09:00 in Shanghai (the ticket's deadline stays on the
    # calendar version it was pinned to: docs/sla.md).
    holiday = {**NINE_TO_SIX, "holidays": [{"day": "2026-11-20"}]}
    await ok(await admin.put("/calendars/hz", json=holiday))
    moved = await ok(await dispatch.post(f"/tickets/{ticket}/dispatch", json={}))
    assert moved["appointment_start"] == "2026-11-23T01:00:00Z"
    assert "Mon 09:00-18:00 Asia/Shanghai" in moved["reason"]


async def test_a_suggestion_in_another_timezone_than_the_calendar_avoids_its_holiday(
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    """A technician on UTC hours, a calendar in Shanghai: Thursday 16:30 UTC is Friday
    00:30 there, a holiday — the window offered, not the shift's start, is what counts;
    and a named technician without a window gets the same."""
    utc_hours = {
        "id": "t-utc",
        "name": "Utc",
        "service_point_id": "sp-east-1",
        "skills": ["washing_machines"],
        "working_hours": [{"weekday": d, "start": "09:00", "end": "18:00"} for d in WORKDAYS],
    }
    await build_network(admin, [utc_hours])
    clock.set(datetime(2026, 11, 19, 16, 30, tzinfo=UTC))
    await define_terms(admin)
    await ok(
        await admin.put("/calendars/hz", json={**NINE_TO_SIX, "holidays": [{"day": "2026-11-20"}]})
    )
    ticket = await open_ticket(intake)
    first = (await ok(await dispatch.get(f"/tickets/{ticket}/candidates")))["candidates"][0]
    # Saturday 00:00-02:00 in Shanghai, inside Friday's UTC shift.
    assert (first["appointment_start"], first["appointment_end"]) == (
        "2026-11-20T16:00:00Z",
        "2026-11-20T18:00:00Z",
    )
    named = await ok(
        await dispatch.post(f"/tickets/{ticket}/dispatch", json={"technician_id": "t-utc"})
    )
    assert named["appointment_start"] == "2026-11-20T16:00:00Z"


async def test_pause_and_resume_move_the_deadline_and_the_timeline_shows_each_segment(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await define_terms(admin)
    clock.set(FRIDAY_1730_SHANGHAI)
    ticket_id = (await receive(intake))["ticket_id"]
    base = f"/tickets/{ticket_id}/sla"
    head = await ledger_head(platform)
    resume = await dispatch.post(f"{base}/resume", json={})
    assert (resume.status_code, problem_rule(resume)) == (409, "not_paused")
    wrong = await dispatch.post(f"{base}/pause", json={"reason": "lunch"})
    assert (wrong.status_code, problem_rule(wrong)) == (422, "reason")
    assert await ledger_head(platform) == head  # refused: nothing written

    clock.set(datetime(2026, 11, 23, 2, tzinfo=UTC))  # Monday 10:00 local
    await ok(await dispatch.post(f"{base}/pause", json={"reason": "customer_unavailable"}))
    twice = await dispatch.post(f"{base}/pause", json={"reason": "customer_unavailable"})
    assert (twice.status_code, problem_rule(twice)) == (409, "already_paused")
    clock.set(datetime(2026, 11, 24, 3, tzinfo=UTC))  # Tuesday 11:00 local
    paused = await ok(await dispatch.get(base))
    assert paused["paused"] and paused["deadlines"][0]["due_at"] is None
    assert paused["deadlines"][0]["status"] == "paused"
    await ok(await dispatch.post(f"{base}/resume", json={"note": "back home"}))
    # Paused Monday 10:00 to Tuesday 11:00 = 10 business hours: due Tuesday 13:30 local
    # instead of Monday 12:30.
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    assert events[-1].event_type == "SlaResumed"
    assert events[-1].payload["response_due_at"] == "2026-11-24T05:30:00Z"
    timeline = await ok(await dispatch.get(base))
    (response,) = timeline["deadlines"]
    assert (response["due_at"], response["paused_minutes"]) == ("2026-11-24T05:30:00Z", 600.0)
    assert [
        (s["state"], s["reason"], s["paused_by"], s["resumed_by"]) for s in timeline["segments"]
    ] == [
        ("running", None, None, None),
        ("paused", "customer_unavailable", "dispatcher:dispatcher-1", "dispatcher:dispatcher-1"),
        ("running", None, None, None),
    ]
    assert timeline["paused_minutes"] == 25 * 60
    # As it stood on Monday at 11:00 local: paused, one hour so far.
    as_of = await ok(await dispatch.get(base, params={"as_of": "2026-11-23T03:00:00Z"}))
    assert [s["state"] for s in as_of["segments"]] == ["running", "paused"]
    assert as_of["paused"] and as_of["segments"][-1]["end"] is None
    assert (await dispatch.get(base, params={"as_of": "2026-11-23T03:00:00"})).status_code == 422


async def test_the_repair_ends_the_timeline_and_a_reopening_runs_it_again(
    platform: Platform, dispatch: httpx.AsyncClient, life: Lifecycle, clock: ManualClock
) -> None:
    """No clock runs after the repair: the timeline's last segment ends there, however
    long after it is read (it kept "running", its minutes growing, for ever)."""
    from shared.kernel.events.tickets import TicketReopened
    from tests.support.lifecycle import append_ticket_events

    received_at = clock.now()
    ticket = await life.through_repair()  # repaired four hours after the receipt
    clock.advance(days=30)
    (segment,) = (await ok(await dispatch.get(f"/tickets/{ticket}/sla")))["segments"]
    assert segment["state"] == "running" and segment["minutes"] == 4 * 60
    repaired_at = received_at + timedelta(hours=4)
    assert datetime.fromisoformat(segment["end"]) == repaired_at
    await append_ticket_events(
        platform, ticket, [TicketReopened(reason="again", source="follow_up")]
    )
    clock.advance(hours=1)
    last = (await ok(await dispatch.get(f"/tickets/{ticket}/sla")))["segments"][-1]
    assert (last["state"], last["end"]) == ("running", None)


async def test_a_paused_ticket_is_never_flagged_and_compliance_counts_business_time(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await define_terms(admin)
    clock.set(FRIDAY_1730_SHANGHAI)
    paused_id = (await receive(intake))["ticket_id"]
    running_id = (await receive(intake, product__serial_number="SN-2"))["ticket_id"]
    answered_id = (await receive(intake, product__serial_number="SN-3"))["ticket_id"]
    pause = {"reason": "waiting_for_approval"}
    await ok(await dispatch.post(f"/tickets/{paused_id}/sla/pause", json=pause))
    # Answered on Monday 11:00 local: 65.5 wall-clock hours after the receipt, but 2.5
    # business hours — within the 4-hour target on the clock.
    clock.set(datetime(2026, 11, 23, 3, tzinfo=UTC))
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    await ok(await intake.post(f"/tickets/{answered_id}/diagnosis", json=diagnosis))
    await platform.runner.catch_up(COMPLIANCE)
    row = await ok(await feedback.get(f"/compliance/tickets/{answered_id}"))
    assert row["checklist"]["responded_within_sla"]["status"] == "true"

    clock.set(datetime(2026, 11, 30, 9, tzinfo=UTC))  # a week later
    # The running ticket's response and the answered one's resolution (simple: 4 h):
    # each the warning (75 %), the breach, then 150 % — the paused ticket nothing.
    assert await check_sla(platform) == 6
    kinds = await stream_kinds(platform, running_id)
    assert kinds.count("SlaWarning") == 2 and kinds.count("SlaBreached") == 1
    assert not {"SlaWarning", "SlaBreached"} & set(await stream_kinds(platform, paused_id))
    await platform.runner.catch_up(COMPLIANCE)
    row = await ok(await feedback.get(f"/compliance/tickets/{paused_id}"))
    assert row["checklist"]["responded_within_sla"]["status"] == "pending"


async def stream_kinds(platform: Platform, ticket_id: str) -> list[str]:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    return [e.event_type for e in events]


async def test_work_lists_show_the_pause_and_the_clock_deadline(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await build_network(admin)
    await define_terms(admin)
    ticket_id = await open_ticket(intake)
    await ok(
        await dispatch.post(
            f"/tickets/{ticket_id}/sla/pause",
            json={"reason": "waiting_for_parts", "note": "motor on order"},
        )
    )
    (item,) = (await ok(await dispatch.get("/dispatch-queue")))["items"]
    assert (item["sla_paused"], item["sla_pause_reason"]) == (True, "waiting_for_parts")
    await ok(await dispatch.post(f"/tickets/{ticket_id}/sla/resume", json={}))
    (item,) = (await ok(await dispatch.get("/dispatch-queue")))["items"]
    assert item["sla_paused"] is False
    # A technician pauses its own tickets only; another region's dispatcher sees none.
    await ok(await dispatch.post(f"/tickets/{ticket_id}/dispatch", json={"technician_id": "t-a"}))
    pause = {"reason": "customer_unavailable"}
    async with service_client("dispatch", platform, role="technician", subject="t-b") as other:
        response = await other.post(f"/tickets/{ticket_id}/sla/pause", json=pause)
        assert response.status_code == 404
        assert (await other.get(f"/tickets/{ticket_id}/sla")).status_code == 404
    async with service_client("dispatch", platform, role="dispatcher", region="west") as west:
        assert (await west.post(f"/tickets/{ticket_id}/sla/pause", json=pause)).status_code == 404
    async with service_client("dispatch", platform, role="technician", subject="t-a") as mine:
        await ok(await mine.post(f"/tickets/{ticket_id}/sla/pause", json=pause))
        timeline = await ok(await mine.get(f"/tickets/{ticket_id}/sla"))
        assert timeline["segments"][-1]["paused_by"] == "technician:t-a"
    (item,) = (await ok(await dispatch.get("/technicians/t-a/assignments")))["items"]
    assert (item["sla_paused"], item["sla_pause_reason"]) == (True, "customer_unavailable")


async def test_a_requisition_from_elsewhere_pauses_and_the_issue_resumes(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    from shared.kernel.events.parts import (
        RequisitionIssued,
        RequisitionRaised,
        RequisitionReserved,
    )

    await define_terms(admin)
    ticket_id = await open_ticket(intake)
    reactor = PartsPauseReactor(platform)

    async def parts_event(stream: str, *payloads: Any) -> None:
        from shared.app.executor import Handling, Invocation
        from shared.kernel.decider import Decider
        from shared.kernel.events.envelope import Actor, CommandContext

        context = CommandContext(actor=Actor(subject="clerk", role="parts_clerk"), service="parts")
        handling = Handling(platform.executor("parts"), Invocation(context), platform.settings)
        decider: Decider[int] = Decider("requisition", lambda _id: 0, lambda s, _p, _a: s + 1)
        await platform.db.write(
            lambda c: handling.execute(c, decider, stream, None, lambda _c, _s: list(payloads))
        )

    raised = RequisitionRaised(
        requisition_id="req-1",
        ticket_id=ticket_id,
        kind="emergency",
        part_number="MOTOR-1",
        quantity=1,
        requesting_location_id="sp-east-1",
    )
    await parts_event(
        "req:req-1", raised, RequisitionReserved(source_location_id="rc-east", quantity=1)
    )
    await platform.runner.catch_up(reactor)
    timeline = await ok(await dispatch.get(f"/tickets/{ticket_id}/sla"))
    assert timeline["paused"] and timeline["pause_reason"] == "waiting_for_parts"
    assert timeline["segments"][-1]["requisition_id"] == "req-1"
    clock.advance(hours=5)
    await parts_event("req:req-1", RequisitionIssued(technician_id="t-a", quantity=1))
    await platform.runner.catch_up(reactor)
    await platform.runner.reset(reactor)  # delivered again: nothing more
    await platform.runner.catch_up(reactor)
    timeline = await ok(await dispatch.get(f"/tickets/{ticket_id}/sla"))
    assert not timeline["paused"]
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    kinds = [e.event_type for e in events]
    assert (kinds.count("SlaPaused"), kinds.count("SlaResumed")) == (1, 1)
    assert events[-1].actor.role == "system"


# --- rebuild and what-if ------------------------------------------------------------------


async def test_rebuild_gives_identical_clocks_and_what_if_writes_nothing(
    platform: Platform,
    admin: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    clock: ManualClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before any policy: the built-in 24×7 terms. Then the business-hours policy.
    clock.set(FRIDAY_1730_SHANGHAI)
    builtin = (await receive(intake))["ticket_id"]
    await define_terms(admin)
    business = (await receive(intake, product__serial_number="SN-2"))["ticket_id"]
    west = (await receive(intake, address__region="west", product__serial_number="SN-3"))[
        "ticket_id"
    ]
    await ok(
        await dispatch.post(
            f"/tickets/{business}/sla/pause", json={"reason": "customer_unavailable"}
        )
    )
    clock.set(datetime(2026, 11, 23, 6, tzinfo=UTC))  # Monday 14:00 local
    await ok(await dispatch.post(f"/tickets/{business}/sla/resume", json={}))
    await check_sla(platform)
    await platform.runner.catch_up(SLA_CLOCKS)

    async def rows() -> list[Any]:
        from services.dispatch.tables import sla_clocks

        query = select(sla_clocks).order_by(sla_clocks.c.ticket_id)
        return await platform.db.read(lambda c: [tuple(r) for r in c.execute(query).all()])

    incremental = await rows()
    await platform.runner.rebuild(SLA_CLOCKS)
    assert await rows() == incremental
    assert {r[0] for r in incremental} == {builtin, business, west}
    # The compliance rows (on the clock) too.
    from services.feedback.tables import compliance_tickets

    await platform.runner.catch_up(COMPLIANCE)
    query = select(compliance_tickets).order_by(compliance_tickets.c.ticket_id)

    async def checklists() -> list[Any]:
        return await platform.db.read(lambda c: [tuple(r) for r in c.execute(query).all()])

    before = await checklists()
    await platform.runner.rebuild(COMPLIANCE)
    assert await checklists() == before and len(before) == 3

    # What-if: the week on a lenient 24×7 policy (72 hours to respond), the clocks now.
    head = await ledger_head(platform)
    body = {
        "policy": {
            "name": "Lenient",
            "response": {"normal": {"hours": 72}, "urgent": {"hours": 8}, "critical": {"hours": 1}},
            "calendar_by_urgency": {"normal": "24x7", "urgent": "24x7", "critical": "24x7"},
        },
        "received_from": "2026-11-16T00:00:00Z",
        "received_to": "2026-11-23T00:00:00Z",
    }
    report = await ok(await admin.post("/sla/what-if", json=body))
    # A PUT body as it is (its reason too) can be tried.
    tried = {**body, "policy": {**body["policy"], "reason": "trying the lenient one"}}
    assert (await ok(await admin.post("/sla/what-if", json=tried)))["total"] == report["total"]
    total = report["total"]
    # Today: the built-in ticket (24 h) and the west one (24×7, not mapped) are overdue,
    # the paused business-hours one still open. On the lenient policy none is overdue.
    assert total["current"]["response"] == {
        "met": 0,
        "late": 0,
        "overdue": 2,
        "open": 1,
        "capped": 0,
    }
    assert total["what_if"]["response"] == {
        "met": 0,
        "late": 0,
        "overdue": 0,
        "open": 3,
        "capped": 0,
    }
    assert total["delta"]["response_breach_rate"] == pytest.approx(-66.67)
    assert [g["key"] for g in report["regions"]] == ["east", "west"]
    east = report["regions"][0]
    assert (east["current"]["tickets"], east["current"]["response_breach_rate"]) == (2, 50.0)
    assert east["what_if"]["response_breach_rate"] == 0.0
    # An admin confined to a region recomputes that region's tickets only.
    async with service_client("dispatch", platform, role="admin", region="west") as regional:
        mine = await ok(await regional.post("/sla/what-if", json=body))
    assert [g["key"] for g in mine["regions"]] == ["west"]
    assert mine["total"]["current"]["tickets"] == 1
    unknown = {**body["policy"], "region_calendars": {"east": "nope"}}
    bad = await admin.post("/sla/what-if", json={**body, "policy": unknown})
    assert (bad.status_code, problem_rule(bad)) == (422, "calendars")
    for built_in in ("24x7", "local"):  # choices, not ids a tried calendar could take
        bad = await admin.post("/sla/what-if", json={**body, "calendars": {built_in: NINE_TO_SIX}})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == f"calendars.{built_in}", bad.text
    # Checked as an admin's definition: a target no calendar reaches within the horizon
    # (8,000 business hours at 45 a week), a calendar closed for longer than it.
    slow = {**body["policy"], "response": {**body["policy"]["response"], "normal": {"hours": 8000}}}
    unreachable = {**body, "policy": {**slow, "region_calendars": {"east": "hz"}}}
    bad = await admin.post("/sla/what-if", json={**unreachable, "calendars": {"hz": NINE_TO_SIX}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "response.normal", bad.text
    assert "unreachable: 8000 business hours on calendar hz" in bad.json()["detail"]
    today = platform.clock.now().date()
    year = [{"day": str(today + timedelta(n))} for n in range(370)]
    closed = {**NINE_TO_SIX, "holidays": year}
    bad = await admin.post("/sla/what-if", json={**body, "calendars": {"hz": closed}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "calendars.hz.holidays", bad.json()["errors"]
    # More tickets than an HTTP caller should wait for: refused, saying how many.
    platform.settings.sla.what_if_max_tickets = 2
    try:
        many = await admin.post("/sla/what-if", json=body)
    finally:
        platform.settings.sla.what_if_max_tickets = 10_000
    assert (many.status_code, problem_rule(many)) == (422, "received_to")
    assert "3 tickets were received in the period" in many.json()["detail"]
    assert await ledger_head(platform) == head

    # The same from the command line, with a YAML policy file: it writes nothing either.
    policy_file = tmp_path / "lenient.yaml"
    policy_file.write_text(
        "name: Lenient\nresponse: {normal: {hours: 72}, urgent: {hours: 8}, critical: {hours: 1}}\n"
        "calendar_by_urgency: {normal: 24x7, urgent: 24x7, critical: 24x7}\n"
    )
    args = ["sla", "what-if", "--policy", str(policy_file), "--from", "2026-11-16"]
    args += ["--to", "2026-11-23", "--at", "2026-11-23T06:00:00Z", "--format", "json"]
    os.environ["DATABASE_URL"] = platform.settings.resolved_database_url
    try:
        assert await asyncio.to_thread(cli_main, args) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["total"]["what_if"]["response"]["open"] == 3
        assert printed["at"] == "2026-11-23T06:00:00Z"  # written as the API writes it
        # As the API: the clocks as they stood (not ahead), a ticket not received by then
        # left out (it counted as open), a refused value named.
        at_start = [*args[:-4], "--at", "2026-11-16T00:00:00Z", "--format", "json"]
        assert await asyncio.to_thread(cli_main, at_start) == 0
        assert json.loads(capsys.readouterr().out)["total"]["current"]["tickets"] == 0
        ahead = [*args[:-4], "--at", "2999-01-01T00:00:00Z"]
        assert await asyncio.to_thread(cli_main, ahead) == 2
        assert (
            "sla what-if: --at: the clocks are recomputed as they stood" in capsys.readouterr().err
        )
        policy_file.write_text("name: Partial\nresponse: {normal: {hours: 72}}\n")
        assert await asyncio.to_thread(cli_main, args) == 2
        assert "sla what-if: response: give a target for every key" in capsys.readouterr().err
        policy_file.write_text(
            "policy: {name: Lenient, response: {normal: {hours: 72}, urgent: {hours: 8}, "
            "critical: {hours: 1}}}\ncalendars: {local: {name: x, timezone: UTC}}\n"
        )
        assert await asyncio.to_thread(cli_main, args) == 2
        refused = capsys.readouterr().err  # named by its path in the file, as the API does
        assert "invalid policy file: calendars.local: " in refused, refused
        assert "'local' is a built-in calendar choice" in refused
    finally:
        del os.environ["DATABASE_URL"]
    assert await ledger_head(platform) == head

    # As they stood at `at`: a diagnosis recorded since (it gives a resolution deadline)
    # is not there yet at an earlier instant.
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    await ok(await intake.post(f"/tickets/{west}/diagnosis", json=diagnosis))
    saturday = await ok(
        await admin.post("/sla/what-if", json={**body, "at": "2026-11-21T00:00:00Z"})
    )
    assert sum(saturday["total"]["current"]["resolution"].values()) == 0
    today = await ok(await admin.post("/sla/what-if", json=body))
    assert sum(today["total"]["current"]["resolution"].values()) == 1


async def test_a_what_if_policy_file_is_held_to_the_put_bodys_rules(
    platform: Platform, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ticketline sla what-if --policy FILE` takes a PUT body as it is: its reason and
    every other text are held to the PUT's rules, as are keys given twice or unknown."""
    monkeypatch.setenv("DATABASE_URL", platform.settings.resolved_database_url)
    policy_file = tmp_path / "lenient.yaml"
    args = ["sla", "what-if", "--policy", str(policy_file), "--from", "2026-11-16"]
    args += ["--to", "2026-11-23", "--at", "2026-11-23T06:00:00Z", "--format", "json"]
    # A PUT body's reason is held to the PUT's rule (it defines nothing here).
    policy_file.write_text(
        "name: Lenient\nresponse: {normal: {hours: 72}, urgent: {hours: 8}, critical: "
        "{hours: 1}}\ncalendar_by_urgency: {normal: 24x7, urgent: 24x7, critical: 24x7}\n"
        f"reason: {'x' * 201}\n"
    )
    assert await asyncio.to_thread(cli_main, args) == 2
    assert "invalid policy file: reason: " in capsys.readouterr().err
    policy_file.write_text(policy_file.read_text().replace("x" * 201, "looser for Q4"))
    assert await asyncio.to_thread(cli_main, args) == 0
    capsys.readouterr()
    # Held to the PUT body's other rules: storable text, no key twice, no unknown key.
    lenient = policy_file.read_text()
    for text, said in (
        (lenient.replace("looser for Q4", '"a\\x1bb"'), "reason: "),
        (lenient + "name: Other\n", "name: given more than once"),
        (f"policy:\n{indent(lenient, '  ')}calendrs: {{}}\n", "calendrs: unknown key"),
    ):
        policy_file.write_text(text)
        assert await asyncio.to_thread(cli_main, args) == 2, text
        assert f"invalid policy file: {said}" in capsys.readouterr().err
    # YAML's merge keys are no key given twice; a key that is no text is unknown, in words.
    policy_file.write_text(
        "policy:\n  name: Merged\n  response:\n    normal: &n {hours: 72}\n"
        "    urgent:\n      <<: *n\n      hours: 8\n    critical: {hours: 1}\n"
    )
    assert await asyncio.to_thread(cli_main, args) == 0, capsys.readouterr().err
    capsys.readouterr()
    policy_file.write_text("policy: {name: t}\n1: x\nfoo: y\n")
    assert await asyncio.to_thread(cli_main, args) == 2
    assert "invalid policy file: 1: unknown key" in capsys.readouterr().err
    json_file = tmp_path / "lenient.json"
    json_file.write_text('{"name": "A", "name": "B"}')
    assert await asyncio.to_thread(cli_main, [*args[:3], str(json_file), *args[4:]]) == 2
    assert "name: given more than once" in capsys.readouterr().err


async def test_a_dispatch_after_a_reopen_does_not_move_the_deadline_the_first_repair_met(
    platform: Platform, admin: httpx.AsyncClient, life: Lifecycle, clock: ManualClock
) -> None:
    """The checklist judges the first repair by the deadline in force then: a re-dispatch
    of the reopened ticket to a point with longer hours does not make it late."""
    from shared.kernel.events.tickets import TicketReopened
    from tests.support.lifecycle import append_ticket_events, project_feedback

    always = {
        "name": "always",
        "timezone": "UTC",
        "hours": [
            {"weekday": d, "start": "00:00", "end": "00:00"} for d in (*WORKDAYS, "sat", "sun")
        ],
    }
    await ok(await admin.put("/calendars/always", json=always))
    resolution = {"simple": {"hours": 4}, "general": {"hours": 24}, "complex": {"hours": 72}}
    await define_terms(admin, resolution=resolution, service_point_calendars={"sp-24": "always"})
    clock.set(FRIDAY_1730_SHANGHAI)
    tid, remote = await life.open(), await life.open()
    for ticket in (tid, remote):  # due Monday 12:30 on the 9-to-6 calendar
        await life.diagnose(ticket, complexity="simple")
    await life.dispatch(tid, service_point="sp-1")
    clock.advance(hours=4, minutes=30)  # Friday 22:00: no business time since 18:00
    await life.visit(tid)
    for ticket in (tid, remote):  # `remote`: fixed on the call, never dispatched
        await life.repair(ticket)
    clock.advance(minutes=30)
    reopened = TicketReopened(reason="broke again", source="follow_up")
    for ticket in (tid, remote):
        await append_ticket_events(platform, ticket, [reopened], role="system")
    clock.advance(minutes=30)
    for ticket in (tid, remote):  # 24 h from receipt: due Friday 21:30
        await life.dispatch(ticket, service_point="sp-24", redispatch=True)
    await project_feedback(platform)
    async with service_client("feedback", platform, role="auditor") as auditor:
        for ticket in (tid, remote):
            checklist = await ok(await auditor.get(f"/compliance/tickets/{ticket}"))
            assert checklist["checklist"]["resolved_within_sla"]["status"] == "true", checklist


async def test_an_event_dated_before_the_response_leaves_no_step_due_for_ever(
    platform: Platform,
) -> None:
    """An import appends a repeat-repair flag dated at the receipt after the diagnosis:
    the clock row, read at that date, had the met response "due" and every SLA pass
    rewrote it for nothing. It is read at the latest time the stream knows."""
    from shared.eventstore.ledger import NO_STREAM
    from shared.kernel.events.envelope import PendingEvent
    from shared.kernel.events.tickets import RepeatRepairFlagged
    from tests.support.factories import context, diagnosed, new_ticket_id, received

    tid = new_ticket_id()
    at = datetime(2026, 11, 2, 9, tzinfo=UTC)  # the receipt; due 2026-11-03 09:00
    flag = RepeatRepairFlagged(
        earlier_ticket_id=new_ticket_id(),
        earlier_repaired_at=at - timedelta(days=3),
        serial_number="SN-1",
        window_days=30,
    )
    stream = [
        PendingEvent(received(), occurred_at=at),
        PendingEvent(diagnosed(), occurred_at=at + timedelta(hours=2)),
        PendingEvent(flag, occurred_at=at),
    ]
    await platform.db.write(
        lambda c: platform.store.append_to_stream(c, tid, NO_STREAM, stream, context())
    )
    await platform.runner.catch_up(SLA_CLOCKS)
    c = SLA_CLOCKS_TABLE.c
    row = await platform.db.read(
        lambda conn: conn.execute(
            select(c.response_status, c.next_check_at).where(c.ticket_id == tid)
        ).one()
    )
    assert row.response_status == "met"
    assert row.next_check_at == datetime(2026, 11, 3, 9, tzinfo=UTC) + timedelta(hours=24)

"""Scorecards (each deduction traced to its events), staff KPIs on hand-computed data, and
quality alerts (once per model, category and day) with the weekly report."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, event, text

from services.feedback import read_models
from services.feedback.jobs import quality_lease, raise_quality_alerts, raise_recent_alerts
from shared.app.config import FeedbackSettings
from shared.app.jobs import FailureReport
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from shared.kernel.events.registry import UnreadableEvent
from tests.support.clients import service_client
from tests.support.dispatch_network import register_points
from tests.support.lifecycle import Lifecycle, project_feedback, warranty_part


async def follow_up(feedback: httpx.AsyncClient, tid: str, score: int) -> None:
    body = {"satisfaction_score": score, "would_recommend": 8, "problem_solved": True}
    response = await feedback.post(f"/tickets/{tid}/follow-ups", json=body | {"channel": "call"})
    assert response.status_code == 201, response.text


async def event_ids(intake: httpx.AsyncClient, tid: str, *types: str) -> list[str]:
    events = (await intake.get(f"/tickets/{tid}/history")).json()["events"]
    return [e["event_id"] for e in events if e["event_type"] in types]


def item(**changes: object) -> dict[str, object]:
    """A manual scorecard item for sp-1 (east), with ``changes``."""
    return {
        "service_point_id": "sp-1",
        "item": "poor_service",
        "occurred_on": "2026-11-02",
        "evidence": "a typo",
    } | changes


async def test_scorecard_deductions_are_traced_to_events(
    life: Lifecycle,
    feedback: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    auditor: httpx.AsyncClient,
    platform: Platform,
    clock: ManualClock,
) -> None:
    # A: the technician arrives an hour after the window and the customer is dissatisfied.
    a = await life.open()
    await life.diagnose(a)
    await life.dispatch(a, window_hours=4)
    clock.advance(hours=5)
    await life.visit(a)
    await life.repair(a)
    await follow_up(feedback, a, 40)
    # B: the replaced in-warranty motor is overdue, then comes back late (one deduction).
    b = await life.through_repair(parts=[warranty_part()])
    # Parts spells the location as registered there: the row is still the point's.
    overdue = await life.part_overdue(b, "MOTOR-WM700", service_point="SP-1")
    await life.part_returned(b, "MOTOR-WM700", late=True)
    # C: closed, then a public complaint.
    c = await life.through_repair()
    await follow_up(feedback, c, 95)
    complaint = await feedback.post(
        f"/tickets/{c}/complaints",
        json={"complaint": "posted on social media", "channel": "web", "public": True},
    )
    assert complaint.status_code == 201
    # D: the same product is back: a repeat repair counts against C's service point.
    d = await life.open()
    await life.diagnose(d)
    await life.dispatch(d, service_point="sp-2", technician="tech-2")
    flag = await life.flag_repeat(d, c)
    # Manual items, entered with their evidence, for service points of the network.
    await register_points(platform, "sp-1", "sp-2")
    async with service_client("feedback", platform, role="admin") as admin:
        for point in ("sp-9", "SP-1", "rc-east"):  # unknown, not as registered, not a point
            unknown = await admin.post("/scorecards/items", json=item(service_point_id=point))
            assert unknown.status_code == 422, unknown.text
            assert unknown.json()["errors"][0]["field"] == "service_point_id"
        elsewhere = await admin.post("/scorecards/items", json=item(region="west"))
        assert elsewhere.status_code == 422 and elsewhere.json()["errors"][0]["field"] == "region"
        # The tickets an item names exist, each named once; the day is a plausible one.
        for change, field in (
            ({"ticket_ids": ["T-1"]}, "ticket_ids.0"),
            ({"ticket_ids": [a, "00000000-0000-4000-8000-000000000000"]}, "ticket_ids.1"),
            ({"ticket_ids": [a, a]}, "ticket_ids.1"),
            ({"occurred_on": "1900-01-01"}, "occurred_on"),
        ):
            typo = await admin.post("/scorecards/items", json=item(**change))
            assert typo.status_code == 422, typo.text
            assert typo.json()["errors"][0]["field"] == field, typo.text
        shopper = item(region="east", evidence="Mystery shopper report MS-118", ticket_ids=[a])
        poor = await admin.post("/scorecards/items", json=shopper)
        assert poor.status_code == 201, poor.text
        # An admin of another region: 403 region, whether the point has items yet or not.
        async with service_client("feedback", platform, role="admin", region="west") as west:
            elsewhere = await west.post("/scorecards/items", json=item())
        assert elsewhere.status_code == 403, elsewhere.text
        assert elsewhere.json()["errors"][0]["field"] == "region", elsewhere.text
        praise = "City paper praised the repair"
        coverage = item(service_point_id="sp-2", item="positive_media_coverage", evidence=praise)
        media = await admin.post("/scorecards/items", json=coverage)
        assert media.status_code == 201, media.text
        # Auditors read everything and write nothing.
        for role in ("call_center_agent", "auditor"):
            async with service_client("feedback", platform, role=role) as other:
                assert (await other.post("/scorecards/items", json={})).status_code == 403
        ahead = item(service_point_id="sp-2", occurred_on="2026-12-01", evidence="not yet")
        future = await admin.post("/scorecards/items", json=ahead)
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "occurred_on"
    await project_feedback(platform)

    response = await auditor.get("/scorecards", params={"month": "2026-11"})
    assert response.status_code == 200, response.text
    data = response.json()
    points = {p["service_point_id"]: p for p in data["service_points"]}
    sp1 = {item["kind"]: item for item in points["sp-1"]["items"]}
    assert sorted(sp1) == [
        "late_parts_return",
        "late_visit_dissatisfied",
        "poor_service",
        "public_complaint",
        "repeat_repair",
    ]
    assert points["sp-1"]["score"] == 100 - 20 - 15 - 20 - 10 - 20
    assert points["sp-2"]["score"] == 105
    assert sp1["late_visit_dissatisfied"]["event_ids"] == await event_ids(
        intake, a, "TicketDispatched", "TicketVisited", "FollowUpRecorded"
    )
    assert sp1["late_parts_return"]["event_ids"] == [str(overdue.event_id)]
    assert sp1["public_complaint"]["event_ids"] == [complaint.json()["events"][0]]
    assert sp1["repeat_repair"]["event_ids"] == [str(flag.event_id)]
    assert sp1["repeat_repair"]["ticket_id"] == d
    assert sp1["poor_service"]["event_ids"] == [poor.json()["event_id"]]
    assert points["sp-2"]["items"][0]["event_ids"] == [media.json()["event_id"]]

    # Staff KPIs (weights 40/20/15/25 and 30/20/50).
    tech1 = next(t for t in data["technicians"] if t["subject"] == "tech-1")
    assert tech1["measures"] == {
        "first_time_fix": 0.0,  # A and C were reopened; B awaits its follow-up
        "timeliness": 66.67,  # A's visit was late, B's and C's on time
        "parts_usage": 100.0,  # B used the expected motor; A and C used no parts
        "customer_rating": 67.5,  # follow-ups 40 and 95
    }
    assert tech1["score"] == round((40 * 0 + 20 * 66.67 + 15 * 100 + 25 * 67.5) / 100, 2)
    tech2 = next(t for t in data["technicians"] if t["subject"] == "tech-2")
    assert tech2["score"] is None  # no repair, visit or follow-up yet
    (agent_kpi,) = data["agents"]
    assert agent_kpi["measures"] == {
        "response_time": 100.0,
        "record_accuracy": 100.0,
        "satisfaction": 67.5,
    }
    assert agent_kpi["score"] == 83.75

    # Weights and points are settings.
    platform.settings.feedback = FeedbackSettings(points_poor_service=-5)
    again = (await auditor.get("/scorecards", params={"month": "2026-11"})).json()
    assert (
        next(p for p in again["service_points"] if p["service_point_id"] == "sp-1")["score"]
        == 100 - 20 - 15 - 5 - 10 - 20
    )
    only = (
        await auditor.get("/scorecards", params={"month": "2026-11", "service_point": "sp-2"})
    ).json()
    assert [p["service_point_id"] for p in only["service_points"]] == ["sp-2"]
    assert only["agents"] == []
    empty = (await auditor.get("/scorecards", params={"month": "2026-10"})).json()
    assert empty["service_points"] == [] and empty["technicians"] == []
    # A month to come has nothing to score: not a card of base scores.
    ahead = await auditor.get("/scorecards", params={"month": "2026-12"})
    assert ahead.status_code == 422 and ahead.json()["errors"][0]["field"] == "month"
    # Once it is December somewhere (UTC+14), an item may be dated then: its card reads.
    before = clock.now()
    clock.set(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    assert (await auditor.get("/scorecards", params={"month": "2026-12"})).status_code == 200
    clock.set(before)
    async with service_client("feedback", platform, role="regional_center", region="west") as rc:
        assert (await rc.get("/scorecards", params={"month": "2026-11"})).json()[
            "service_points"
        ] == []
    # The media item named no region: it has its point's, so the east center sees it.
    async with service_client("feedback", platform, role="regional_center", region="east") as rc:
        east = (await rc.get("/scorecards", params={"month": "2026-11"})).json()
    assert {p["service_point_id"]: p["score"] for p in east["service_points"]}["sp-2"] == 105


async def test_a_technicians_visits_count_for_them_after_the_ticket_moved_on(
    life: Lifecycle,
    feedback: httpx.AsyncClient,
    auditor: httpx.AsyncClient,
    platform: Platform,
    clock: ManualClock,
) -> None:
    """A technician's measures are of the work they did: tech-1's late visit, its first
    repair that did not fix it and the dissatisfied follow-up of that repair count for
    tech-1 after the reopened ticket went to tech-2 — not against tech-2, who fixed it."""
    a = await life.open()
    await life.diagnose(a)
    await life.dispatch(a, window_hours=4)
    clock.advance(hours=5)
    await life.visit(a)
    await life.repair(a)
    await follow_up(feedback, a, 40)  # reopened
    await life.dispatch(a, technician="tech-2", redispatch=True)
    await life.visit(a, technician="tech-2")
    await life.repair(a, technician="tech-2")
    await project_feedback(platform)
    data = (await auditor.get("/scorecards", params={"month": "2026-11"})).json()
    measures = {t["subject"]: t["measures"] for t in data["technicians"]}
    assert measures["tech-1"] == {
        "first_time_fix": 0.0,  # its first repair was reopened
        "timeliness": 0.0,
        "parts_usage": 100.0,
        "customer_rating": 40.0,  # the follow-up of its repair
    }
    assert measures["tech-2"] == {
        "first_time_fix": None,  # made no first repair
        "timeliness": 100.0,
        "parts_usage": 100.0,
        "customer_rating": None,  # its repair not followed up yet
    }
    await follow_up(feedback, a, 95)
    await project_feedback(platform)
    data = (await auditor.get("/scorecards", params={"month": "2026-11"})).json()
    rated = {t["subject"]: t["measures"]["customer_rating"] for t in data["technicians"]}
    assert rated == {"tech-1": 40.0, "tech-2": 95.0}


async def test_a_diagnosis_edited_into_no_category_is_named_not_a_crash(
    life: Lifecycle, platform: Platform, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored diagnosis edited since (a fault category no ticket can have): the job's pass
    fails naming the event's position — one line, not a traceback at every interval."""
    ticket_id = await life.through_repair()
    position = await platform.db.read(
        lambda c: c.execute(
            text(
                "SELECT position FROM events WHERE stream_id = :t AND event_type = 'TicketDiagnosed'"
            ),
            {"t": ticket_id},
        ).scalar_one()
    )
    edit = text(
        "UPDATE events SET payload = replace(payload, '\"quality_defect\"', '\"bogus\"') "
        "WHERE position = :p"
    )
    await platform.db.write(lambda c: c.execute(edit, {"p": position}))
    with pytest.raises(UnreadableEvent) as damaged:
        await raise_quality_alerts(platform, clock.now().date())
    assert damaged.value.position == position
    with caplog.at_level(logging.ERROR):
        FailureReport("job feedback:quality-alerts").report(damaged.value)
    (record,) = [r for r in caplog.records if r.name == "shared.app.jobs"]
    assert f"position {position}" in record.getMessage() and record.exc_info is None


async def test_a_days_repairs_come_through_their_own_index(
    life: Lifecycle, platform: Platform, clock: ManualClock
) -> None:
    # The quality job's pass every minute must not walk the whole ledger for a day's
    # repairs: the partial index over the repair events is what makes it cheap.
    await life.through_repair()
    await life.open()

    def repairs_and_plan(conn: Connection) -> tuple[int, list[str]]:
        seen: list[tuple[str, Any]] = []

        def record(_c, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
            seen.append((statement, parameters))

        event.listen(conn, "before_cursor_execute", record)
        try:
            groups = read_models.repairs_on(conn, clock.now().date())
        finally:
            event.remove(conn, "before_cursor_execute", record)
        ((statement, parameters),) = seen
        explain = "EXPLAIN QUERY PLAN "
        if conn.dialect.name == "postgresql":
            explain = "EXPLAIN "  # on a tiny table only the index's applicability is news
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = conn.exec_driver_sql(explain + statement, parameters).all()
        return sum(map(len, groups.values())), [str(row[-1]) for row in plan]

    repairs, plan = await platform.db.read(repairs_and_plan)
    assert repairs == 1
    assert any("ix_events_repaired_occurred_at" in step for step in plan), plan


async def test_quality_alert_once_per_model_category_day(
    life: Lifecycle,
    auditor: httpx.AsyncClient,
    platform: Platform,
    clock: ManualClock,
) -> None:
    platform.settings.feedback = FeedbackSettings(quality_alert_threshold=3)
    day = clock.now().date()
    tickets = [await life.through_repair() for _ in range(2)]
    assert await raise_quality_alerts(platform, day) == []  # 2 < 3
    tickets.append(await life.through_repair())
    other = await life.open(model="DW-100")
    await life.through_repair(other)
    # The job's pass (today and yesterday), in the process holding the lease.
    assert await quality_lease(platform, "projector-a").acquire()
    (alert,) = await raise_recent_alerts(platform)
    assert await quality_lease(platform, "projector-b").acquire() is False
    assert alert.event_type == "QualityAlertRaised"
    assert alert.payload | {"ticket_ids": sorted(alert.payload["ticket_ids"])} == {
        "product_model": "WM-700",
        "fault_category": "quality_defect",
        "day": day.isoformat(),
        "count": 3,
        "threshold": 3,
        "ticket_ids": sorted(tickets),
    }
    # Never the same fact twice: a second pass (or another process) records nothing.
    assert await raise_quality_alerts(platform, day) == []
    # A fourth repair the same day does not raise a second alert either.
    await life.through_repair()
    assert await raise_quality_alerts(platform, day) == []
    assert await raise_recent_alerts(platform) == []
    # Repairs on the next day count for that day.
    clock.advance(days=1)
    assert await raise_quality_alerts(platform, day + timedelta(days=1)) == []

    await project_feedback(platform)
    report = await auditor.get("/quality/weekly", params={"week": "2026-W45"})
    assert report.status_code == 200, report.text
    data = report.json()
    assert (data["from_day"], data["to_day"], data["threshold"]) == ("2026-11-02", "2026-11-08", 3)
    assert [a["event_id"] for a in data["alerts"]] == [str(alert.event_id)]
    counts = {(c["product_model"], c["fault_category"]): c["repairs"] for c in data["counts"]}
    assert counts == {("WM-700", "quality_defect"): 4, ("DW-100", "quality_defect"): 1}
    assert (await auditor.get("/quality/weekly", params={"week": "2026-W46"})).json()[
        "alerts"
    ] == []
    # The counts are everyone's; a regional caller's alert lists its own region's tickets.
    for region, listed in (("east", sorted(tickets)), ("west", [])):
        async with service_client(
            "feedback", platform, role="regional_center", region=region
        ) as center:
            seen = (await center.get("/quality/weekly", params={"week": "2026-W45"})).json()
        assert sorted(seen["alerts"][0]["ticket_ids"]) == listed
        assert seen["counts"] == data["counts"]
    for bad in ("2026-47", "2026-W54", "2025-W53"):
        response = await auditor.get("/quality/weekly", params={"week": bad})
        assert response.status_code == 422, (bad, response.text)


async def test_quality_alerts_count_repairs_as_the_weekly_report_does(
    life: Lifecycle,
    auditor: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    platform: Platform,
    clock: ManualClock,
) -> None:
    """The alert and the report count the same thing: each repair once (a ticket repaired
    twice counts twice), in the fault category of the diagnosis at that repair (a
    re-diagnosis after a reopening does not move the earlier repair)."""
    platform.settings.feedback = FeedbackSettings(quality_alert_threshold=3)
    clock.set(datetime(2026, 11, 2, 0, 30, tzinfo=UTC))
    day = clock.now().date()
    first = await life.through_repair()  # quality_defect
    unhappy = {"satisfaction_score": 30, "would_recommend": 2, "problem_solved": False}
    response = await feedback.post(
        f"/tickets/{first}/follow-ups", json=unhappy | {"channel": "call"}
    )
    assert response.status_code == 201, response.text
    await life.diagnose(first, category="misuse")  # reopened: diagnosed again
    await life.dispatch(first, service_point="sp-1", technician="tech-1")
    await life.visit(first, technician="tech-1")
    await life.repair(first, technician="tech-1")
    second = await life.through_repair()
    assert await raise_quality_alerts(platform, day) == []  # two quality defects so far
    third = await life.through_repair()
    (alert,) = await raise_quality_alerts(platform, day)
    assert (alert.payload["fault_category"], alert.payload["count"]) == ("quality_defect", 3)
    assert sorted(alert.payload["ticket_ids"]) == sorted([first, second, third])

    await project_feedback(platform)
    data = (await auditor.get("/quality/weekly", params={"week": "2026-W45"})).json()
    counts = {(c["product_model"], c["fault_category"]): c["repairs"] for c in data["counts"]}
    assert counts == {("WM-700", "quality_defect"): 3, ("WM-700", "misuse"): 1}
    assert [a["event_id"] for a in data["alerts"]] == [str(alert.event_id)]


def test_a_kpi_score_is_made_from_the_exact_measures() -> None:
    """2/3 first-time fixes and ratings 60, 60, 95: 0.4·66.667 + 0.2·100 + 0.15·100 +
    0.25·71.667 = 79.583 → 79.58 (from the rounded measures it read 79.59)."""
    from services.feedback.read_models import _kpi

    weights = {
        "first_time_fix": 0.4,
        "timeliness": 0.2,
        "parts_usage": 0.15,
        "customer_rating": 0.25,
    }
    measures = {
        "first_time_fix": 100 * 2 / 3,
        "timeliness": 100.0,
        "parts_usage": 100.0,
        "customer_rating": (60 + 60 + 95) / 3,
    }
    kpi = _kpi("t-e2", "technician", 3, measures, weights)
    assert kpi["score"] == 79.58
    assert (
        kpi["measures"]["first_time_fix"] == 66.67 and kpi["measures"]["customer_rating"] == 71.67
    )


async def test_a_month_without_items_lists_every_active_point_at_the_base_score(
    platform: Platform, auditor: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A dealer with a perfect month is in the ranking (it was missing without a ticket or
    an item); a point registered later, or inactive at the month's end, is not."""
    await register_points(platform, "sp-quiet", "sp-closed")
    async with service_client("dispatch", platform, role="admin") as admin:
        west = {"level": "regional_center", "parent_id": "hq", "region": "west"}
        for member in (
            {"id": "rc-west", "name": "West RC"} | west,
            {"id": "sp-west", "name": "West", "level": "service_point", "kind": "dealer"}
            | {"parent_id": "rc-west"},
        ):
            created = await admin.post("/service-points", json=member)
            assert created.status_code == 201, created.text
        closed = (await admin.get("/service-points/sp-closed")).json()
        update = {
            k: closed[k] for k in ("name", "level", "kind", "parent_id", "region") if closed[k]
        }
        response = await admin.put(
            "/service-points/sp-closed",
            json=update | {"active": False},
            headers={"If-Match": '"1"'},
        )
        assert response.status_code == 200, response.text
    month = clock.now().strftime("%Y-%m")
    listed = (await auditor.get("/scorecards", params={"month": month})).json()
    assert [(p["service_point_id"], p["score"], p["items"]) for p in listed["service_points"]] == [
        ("sp-quiet", 100.0, []),
        ("sp-west", 100.0, []),
    ]
    earlier = (await auditor.get("/scorecards", params={"month": "2026-10"})).json()
    assert earlier["service_points"] == []
    async with service_client("feedback", platform, role="regional_center", region="east") as east:
        mine = (await east.get("/scorecards", params={"month": month})).json()
    assert [p["service_point_id"] for p in mine["service_points"]] == ["sp-quiet"]

"""Feedback over HTTP: the return visit closes or reopens, complaints, roles, retries."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.app.config import FeedbackSettings
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from tests.support.clients import service_client
from tests.support.lifecycle import Lifecycle


def follow_up(score: int = 92, recommend: int = 9, solved: bool = True) -> dict[str, Any]:
    return {
        "satisfaction_score": score,
        "would_recommend": recommend,
        "problem_solved": solved,
        "comment": "thanks",
        "channel": "call",
    }


async def history_types(intake: httpx.AsyncClient, ticket_id: str) -> list[str]:
    events = (await intake.get(f"/tickets/{ticket_id}/history")).json()["events"]
    return [e["event_type"] for e in events]


async def test_satisfied_and_solved_closes(
    life: Lifecycle, feedback: httpx.AsyncClient, intake: httpx.AsyncClient
) -> None:
    tid = await life.through_repair()
    response = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(score=60))
    assert response.status_code == 201, response.text
    data = response.json()
    assert (data["outcome"], data["status"]) == ("closed", "closed")  # 60 is not below 60
    assert response.headers["etag"] == f'"{data["version"]}"'
    assert (await history_types(intake, tid))[-2:] == ["FollowUpRecorded", "TicketClosed"]
    ticket = (await intake.get(f"/tickets/{tid}")).json()
    assert ticket["status"] == "closed" and ticket["satisfaction_score"] == 60


@pytest.mark.parametrize(("score", "solved"), [(59, True), (95, False)])
async def test_dissatisfied_or_unsolved_reopens_and_escalates(
    life: Lifecycle,
    feedback: httpx.AsyncClient,
    intake: httpx.AsyncClient,
    score: int,
    solved: bool,
) -> None:
    tid = await life.through_repair()
    response = await feedback.post(
        f"/tickets/{tid}/follow-ups", json=follow_up(score=score, solved=solved)
    )
    assert response.status_code == 201, response.text
    assert (response.json()["outcome"], response.json()["status"]) == ("reopened", "reopened")
    events = (await intake.get(f"/tickets/{tid}/history")).json()["events"]
    assert [e["event_type"] for e in events][-3:] == [
        "FollowUpRecorded",
        "TicketReopened",
        "TicketEscalated",
    ]
    assert events[-2]["payload"]["source"] == "follow_up"
    assert events[-1]["payload"] | {"reason": ""} == {
        "level": "regional_center",
        "cause": "reopened",
        "region": "east",
        "reason": "",
    }


async def test_threshold_is_a_setting(
    life: Lifecycle, feedback: httpx.AsyncClient, platform: Platform
) -> None:
    platform.settings.feedback = FeedbackSettings(dissatisfied_below=80)
    tid = await life.through_repair()
    response = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(score=75))
    assert response.json()["outcome"] == "reopened"


async def test_reopen_redispatch_then_close(
    life: Lifecycle, feedback: httpx.AsyncClient, intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    tid = await life.through_repair()
    first = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(score=30))
    assert first.json()["status"] == "reopened"
    # Back to dispatch: a new technician goes out and repairs again.
    clock.advance(hours=2)
    await life.dispatch(tid, technician="tech-2", redispatch=True)
    clock.advance(hours=1)
    await life.visit(tid, technician="tech-2")
    await life.repair(tid, technician="tech-2")
    second = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(score=91))
    assert second.json()["status"] == "closed", second.text
    ticket = (await intake.get(f"/tickets/{tid}")).json()
    assert (ticket["status"], ticket["reopen_count"], ticket["technician_id"]) == (
        "closed",
        1,
        "tech-2",
    )


async def test_follow_up_rules(life: Lifecycle, feedback: httpx.AsyncClient) -> None:
    tid = await life.open()
    early = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up())
    assert early.status_code == 409 and early.json()["rule"] == "follow_up_requires_repair"
    await life.through_repair(tid)
    assert (await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up())).status_code == 201
    closed = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up())
    assert closed.status_code == 409 and closed.json()["rule"] == "ticket_closed"
    unknown = await feedback.post(
        "/tickets/00000000-0000-4000-8000-000000000000/follow-ups", json=follow_up()
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"satisfaction_score": 101}, "satisfaction_score"),
        ({"satisfaction_score": True}, "satisfaction_score"),  # numbers are JSON numbers
        ({"would_recommend": "9"}, "would_recommend"),
        ({"would_recommend": -1}, "would_recommend"),
        ({"channel": "email"}, "channel"),
        ({"problem_solved": None}, "problem_solved"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_follow_up_is_422_naming_the_field(
    life: Lifecycle, feedback: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    tid = await life.open()
    response = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up() | change)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_roles(life: Lifecycle, platform: Platform) -> None:
    tid = await life.through_repair()
    async with service_client("feedback", platform, role="technician") as technician:
        response = await technician.post(f"/tickets/{tid}/follow-ups", json=follow_up())
        assert response.status_code == 403
        assert (await technician.get("/compliance/tickets")).status_code == 403
    async with service_client("feedback", platform, role="auditor") as auditor:
        response = await auditor.post(f"/tickets/{tid}/follow-ups", json=follow_up())
        assert response.status_code == 403  # auditors read, they do not record follow-ups


async def test_idempotent_retry_and_stale_version(
    life: Lifecycle, feedback: httpx.AsyncClient, intake: httpx.AsyncClient
) -> None:
    tid = await life.through_repair()
    version = (await intake.get(f"/tickets/{tid}")).json()["version"]
    stale = await feedback.post(
        f"/tickets/{tid}/follow-ups", json=follow_up(), headers={"If-Match": f'"{version - 1}"'}
    )
    assert stale.status_code == 409
    headers = {"Idempotency-Key": "fu-1", "If-Match": f'"{version}"'}
    first = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(), headers=headers)
    again = await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert (await history_types(intake, tid)).count("FollowUpRecorded") == 1


async def test_complaints(
    life: Lifecycle, feedback: httpx.AsyncClient, intake: httpx.AsyncClient, platform: Platform
) -> None:
    tid = await life.through_repair()
    complaint = {"complaint": "technician was late", "channel": "phone"}
    on_open = await feedback.post(f"/tickets/{tid}/complaints", json=complaint)
    assert on_open.status_code == 201 and on_open.json()["outcome"] == "recorded"
    assert (await history_types(intake, tid))[-1] == "ComplaintFiled"
    await feedback.post(f"/tickets/{tid}/follow-ups", json=follow_up())
    # The call center takes a complaint on the closed ticket: it reopens and escalates.
    async with service_client("feedback", platform, role="call_center_agent") as agent:
        response = await agent.post(
            f"/tickets/{tid}/complaints",
            json={"complaint": "broke again", "channel": "phone", "public": True},
        )
    assert response.status_code == 201, response.text
    assert (response.json()["outcome"], response.json()["status"]) == ("reopened", "reopened")
    events = (await intake.get(f"/tickets/{tid}/history")).json()["events"]
    assert [e["event_type"] for e in events][-3:] == [
        "ComplaintFiled",
        "TicketReopened",
        "TicketEscalated",
    ]
    assert events[-2]["payload"]["source"] == "complaint"
    assert events[-1]["payload"]["cause"] == "complaint"
    missing = await feedback.post(
        "/tickets/00000000-0000-4000-8000-000000000000/complaints", json=complaint
    )
    assert missing.status_code == 404


async def test_openapi_documents_the_endpoints(feedback: httpx.AsyncClient) -> None:
    paths = (await feedback.get("/openapi.json")).json()["paths"]
    for path in (
        "/tickets/{ticket_id}/follow-ups",
        "/tickets/{ticket_id}/complaints",
        "/compliance/tickets",
        "/compliance/summary",
        "/scorecards",
        "/scorecards/items",
        "/quality/weekly",
    ):
        assert path in paths

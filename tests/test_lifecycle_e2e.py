"""One ticket through all four services over HTTP, as the people who run them would:
intake → dispatch (suggested technician) → parts (requisition, issue) → visit → repair
→ parts reactor consumes and expects the old part → old part returned → follow-up closes
→ the compliance view shows the closed loop, and the ledger verifies."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx

from shared.app.platform import Platform
from shared.app.registry import all_handlers
from shared.eventstore.verify import verify_ledger
from tests.support.clients import service_client
from tests.support.dispatch_network import build_network, hours, open_ticket

TECHNICIAN = {
    "id": "t-a",
    "name": "A",
    "service_point_id": "sp-east-1",
    "skills": ["washing_machines"],
    "working_hours": hours(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00", "23:59"),
}
PART = "MOTOR-WM700"


async def run_projector(platform: Platform) -> None:
    """What the projector process does: every projection and reactor catches up."""
    for _ in range(2):  # reactors' events feed the projections on the second pass
        for handler in all_handlers(platform).values():
            await platform.runner.catch_up(handler)


async def test_a_ticket_closes_the_loop_across_all_services(
    platform: Platform, intake: httpx.AsyncClient, feedback: httpx.AsyncClient
) -> None:
    async with AsyncExitStack() as stack:

        async def client(service: str, **credentials: str) -> httpx.AsyncClient:
            return await stack.enter_async_context(service_client(service, platform, **credentials))

        network_admin = await client("dispatch", role="admin")
        dispatcher = await client("dispatch", region="east")
        tech_dispatch = await client("dispatch", role="technician", subject="t-a")
        parts_admin = await client("parts", role="admin")
        clerk = await client("parts", location="sp-east-1")
        tech_parts = await client("parts", role="technician", subject="t-a")
        auditor = await client("feedback", role="auditor")

        # The network, and the parts locations under the same ids.
        await build_network(network_admin, technicians=[TECHNICIAN])
        for location_id, body in {
            "hq": {"name": "HQ", "level": "headquarters"},
            "rc-east": {"name": "East RC", "level": "regional_center", "parent_id": "hq"},
            "sp-east-1": {"name": "East outlet", "level": "service_point", "parent_id": "rc-east"},
        }.items():
            if body["level"] != "headquarters":
                body = {**body, "region": "east"}
            response = await parts_admin.put(f"/locations/{location_id}", json=body)
            assert response.status_code in (200, 201), response.text
        response = await parts_admin.put(
            f"/parts/{PART}",
            json={"name": "Drum motor", "fits_models": ["WM-700"], "unit_cost": 86.5},
        )
        assert response.status_code in (200, 201), response.text
        response = await clerk.post("/stock/receipts", json={"part_number": PART, "quantity": 2})
        assert response.status_code in (200, 201), response.text

        # Intake opens and diagnoses; dispatch suggests the technician.
        ticket_id = await open_ticket(intake)
        response = await dispatcher.post(f"/tickets/{ticket_id}/dispatch", json={})
        assert response.status_code in (200, 201), response.text
        assert response.json()["technician_id"] == "t-a"
        assert response.json()["reason"]

        # The technician asks for the part; the clerk hands it over.
        response = await tech_parts.post(
            "/requisitions", json={"ticket_id": ticket_id, "part_number": PART}
        )
        assert response.status_code == 201, response.text
        requisition = response.json()
        assert requisition["source_location_id"] == "sp-east-1"
        response = await clerk.post(f"/requisitions/{requisition['requisition_id']}/issue", json={})
        assert response.status_code == 200, response.text

        # On site: check in, replace the motor under warranty.
        response = await tech_dispatch.post(
            f"/tickets/{ticket_id}/visit", json={"findings": "motor burnt out"}
        )
        assert response.status_code in (200, 201), response.text
        response = await tech_dispatch.post(
            f"/tickets/{ticket_id}/repair",
            json={
                "outcome": "replaced",
                "parts_used": [
                    {
                        "part_number": PART,
                        "new_serial": "M-NEW-1",
                        "old_serial": "M-OLD-1",
                        "under_warranty": True,
                    }
                ],
                "labour_minutes": 50,
            },
        )
        assert response.status_code in (200, 201), response.text

        # The projector runs the parts reactor: stock consumed, old part expected.
        await run_projector(platform)
        response = await clerk.get("/stock", params={"location": "sp-east-1"})
        assert response.status_code == 200, response.text
        (level,) = [s for s in response.json() if s["part_number"] == PART]
        assert (level["on_hand"], level["reserved"], level["issued"]) == (1, 0, 0)
        response = await clerk.post(
            "/returns",
            json={"ticket_id": ticket_id, "part_number": PART, "old_serial": "M-OLD-1"},
        )
        assert response.status_code == 201, response.text

        # Customer relations calls back: satisfied and solved → closed.
        response = await feedback.post(
            f"/tickets/{ticket_id}/follow-ups",
            json={
                "satisfaction_score": 96,
                "would_recommend": 10,
                "problem_solved": True,
                "channel": "call",
            },
        )
        assert response.status_code in (200, 201), response.text
        response = await intake.get(f"/tickets/{ticket_id}")
        assert response.json()["status"] == "closed"

        await run_projector(platform)
        response = await auditor.get(f"/compliance/tickets/{ticket_id}")
        assert response.status_code == 200, response.text
        view = response.json()
        failing = {k: v for k, v in view["checklist"].items() if v["status"] != "true"}
        assert failing == {}
        assert view["compliant"] == "true"
        assert (view["service_point_id"], view["technician_id"]) == ("sp-east-1", "t-a")

    report = await platform.db.read(lambda c: verify_ledger(c, platform.store))
    assert report.ok

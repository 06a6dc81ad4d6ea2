"""A small, realistic world over HTTP for tests that probe many routes: the service network,
parts locations and stock, and tickets at several steps of their lifecycle."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from shared.app.platform import Platform
from shared.app.registry import all_handlers
from tests.support.clients import service_client
from tests.support.dispatch_network import build_network, hours, open_ticket

TECHNICIAN = "t-world"
LOCATION = "sp-east-1"
PART = "MOTOR-WM700"


@dataclass(frozen=True)
class World:
    """Ids that exist, for path parameters: a ticket assigned to ``technician`` with a
    requisition issued for it, and a repaired one whose old part is expected back."""

    ticket_id: str
    repaired_ticket_id: str
    requisition_id: str
    technician_id: str = TECHNICIAN
    point_id: str = LOCATION
    location_id: str = LOCATION
    part_number: str = PART

    def path_values(self) -> dict[str, str]:
        return {
            "ticket_id": self.ticket_id,
            "requisition_id": self.requisition_id,
            "technician_id": self.technician_id,
            "point_id": self.point_id,
            "location_id": self.location_id,
            "part_number": self.part_number,
        }


async def run_projector(platform: Platform) -> None:
    for _ in range(2):  # reactors' events feed the projections on the second pass
        for handler in all_handlers(platform).values():
            await platform.runner.catch_up(handler)


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code in (200, 201), response.text
    return response


async def build_world(platform: Platform) -> World:
    technician = {
        "id": TECHNICIAN,
        "name": "World technician",
        "service_point_id": LOCATION,
        "skills": ["washing_machines"],
        "working_hours": hours(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00", "23:59"),
    }
    async with AsyncExitStack() as stack:

        async def client(service: str, **credentials: str) -> httpx.AsyncClient:
            return await stack.enter_async_context(service_client(service, platform, **credentials))

        intake = await client("intake")
        network_admin = await client("dispatch", role="admin")
        parts_admin = await client("parts", role="admin")
        clerk = await client("parts", location=LOCATION)
        tech_dispatch = await client("dispatch", role="technician", subject=TECHNICIAN)
        tech_parts = await client("parts", role="technician", subject=TECHNICIAN)

        await build_network(network_admin, technicians=[technician])
        for location_id, body in {
            "hq": {"name": "HQ", "level": "headquarters"},
            "rc-east": {"name": "East RC", "level": "regional_center", "parent_id": "hq"},
            LOCATION: {"name": "East outlet", "level": "service_point", "parent_id": "rc-east"},
        }.items():
            if body["level"] != "headquarters":
                body = {**body, "region": "east"}
            _ok(await parts_admin.put(f"/locations/{location_id}", json=body))
        _ok(
            await parts_admin.put(
                f"/parts/{PART}",
                json={"name": "Drum motor", "fits_models": ["WM-700"], "unit_cost": 86.5},
            )
        )
        _ok(await clerk.post("/stock/receipts", json={"part_number": PART, "quantity": 5}))

        tickets = []
        for serial in ("SN-W-1", "SN-W-2"):
            ticket_id = await open_ticket(intake, product__serial_number=serial)
            _ok(await network_admin.post(f"/tickets/{ticket_id}/dispatch", json={}))
            tickets.append(ticket_id)
        open_one, repaired = tickets
        requisition = _ok(
            await tech_parts.post(
                "/requisitions", json={"ticket_id": open_one, "part_number": PART}
            )
        ).json()["requisition_id"]
        _ok(await clerk.post(f"/requisitions/{requisition}/issue", json={}))
        _ok(await tech_dispatch.post(f"/tickets/{repaired}/visit", json={"findings": "burnt"}))
        used = {"part_number": PART, "old_serial": "M-OLD-1", "under_warranty": True}
        _ok(
            await tech_dispatch.post(
                f"/tickets/{repaired}/repair",
                json={"outcome": "replaced", "parts_used": [used], "labour_minutes": 30},
            )
        )
    await run_projector(platform)
    return World(ticket_id=open_one, repaired_ticket_id=repaired, requisition_id=requisition)

"""A small service network and ticket helpers for the dispatch tests (over HTTP)."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from tests.support.clients import service_client

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def hours(days: tuple[str, ...] = WEEKDAYS, start: str = "08:00", end: str = "18:00") -> list:
    return [{"weekday": d, "start": start, "end": end} for d in days]


POINTS: list[dict[str, Any]] = [
    {"id": "hq", "name": "Headquarters", "level": "headquarters"},
    {
        "id": "rc-east",
        "name": "East RC",
        "level": "regional_center",
        "parent_id": "hq",
        "region": "east",
    },
    {
        "id": "rc-west",
        "name": "West RC",
        "level": "regional_center",
        "parent_id": "hq",
        "region": "west",
    },
    # Covers the whole east region.
    {
        "id": "sp-east-1",
        "name": "East outlet",
        "level": "service_point",
        "kind": "own_outlet",
        "parent_id": "rc-east",
        "region": "east",
    },
    # Covers only postcodes starting 3100 in the east.
    {
        "id": "sp-east-2",
        "name": "East dealer",
        "level": "service_point",
        "kind": "dealer",
        "parent_id": "rc-east",
        "region": "east",
        "postcodes": ["3100"],
    },
    {
        "id": "sp-west-1",
        "name": "West outlet",
        "level": "service_point",
        "kind": "own_outlet",
        "parent_id": "rc-west",
        "region": "west",
    },
]

TECHNICIANS: list[dict[str, Any]] = [
    {
        "id": "t-a",
        "name": "A",
        "service_point_id": "sp-east-1",
        "skills": ["washing_machines"],
        "working_hours": hours(),
    },
    {
        "id": "t-b",
        "name": "B",
        "service_point_id": "sp-east-2",
        "skills": ["Washing_Machines"],
        "working_hours": hours(),
    },
    {
        "id": "t-c",
        "name": "C",
        "service_point_id": "sp-east-1",
        "skills": ["fridges"],
        "working_hours": hours(),
    },
    {
        "id": "t-w",
        "name": "W",
        "service_point_id": "sp-west-1",
        "skills": ["washing_machines"],
        "working_hours": hours(),
    },
]


async def build_network(
    admin: httpx.AsyncClient, technicians: list[dict[str, Any]] | None = None
) -> None:
    for point in POINTS:
        response = await admin.post("/service-points", json=point)
        assert response.status_code == 201, response.text
    for tech in TECHNICIANS if technicians is None else technicians:
        response = await admin.post("/technicians", json=tech)
        assert response.status_code == 201, response.text


def ticket_body(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(RECEIVE_EXAMPLE)  # region east, postcode 310000, washing machines
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return data


async def open_ticket(
    intake: httpx.AsyncClient,
    *,
    path: str | None = "on_site",
    complexity: str = "general",
    **changes: Any,
) -> str:
    response = await intake.post("/tickets", json=ticket_body(**changes))
    assert response.status_code == 201, response.text
    ticket_id: str = response.json()["ticket_id"]
    if path is not None:
        diagnosis = {
            "category": "quality_defect",
            "complexity": complexity,
            "resolution_path": path,
        }
        response = await intake.post(f"/tickets/{ticket_id}/diagnosis", json=diagnosis)
        assert response.status_code == 200, response.text
    return ticket_id


def problem_rule(response: httpx.Response) -> str | None:
    body = response.json()
    return body.get("rule") or (body.get("errors") or [{}])[0].get("field")


async def register_points(platform: Platform, *point_ids: str, region: str = "east") -> None:
    """Headquarters, the region's center and these service points, registered through
    dispatch (for tests that name service points without building the whole network)."""
    members = [
        {"id": "hq", "name": "Headquarters", "level": "headquarters"},
        {
            "id": f"rc-{region}",
            "name": f"{region} RC",
            "level": "regional_center",
            "parent_id": "hq",
            "region": region,
        },
        *(
            {
                "id": point,
                "name": point,
                "level": "service_point",
                "kind": "own_outlet",
                "parent_id": f"rc-{region}",
                "region": region,
            }
            for point in point_ids
        ),
    ]
    async with service_client("dispatch", platform, role="admin") as admin:
        for member in members:
            response = await admin.post("/service-points", json=member)
            assert response.status_code == 201, response.text

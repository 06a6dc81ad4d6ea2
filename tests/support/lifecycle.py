"""Drive tickets through their lifecycle in tests: intake over HTTP, and the dispatch,
visit, repair, SLA and parts events written directly through a service's executor with
the shared payloads (as the services that own them would record them)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx

from services.feedback.projections import PROJECTIONS as FEEDBACK_PROJECTIONS
from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.executor import Handling, Invocation
from shared.app.executor import Outcome as TicketCommandResult
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from shared.kernel.events.envelope import Actor, CommandContext, EventEnvelope, EventPayload
from shared.kernel.events.tickets import (
    CostBearer,
    OldPartReturned,
    OldPartReturnOverdue,
    RepairOutcome,
    RepeatRepairFlagged,
    SlaBreached,
    SlaDeadline,
    TicketDispatched,
    TicketRepaired,
    TicketVisited,
    UsedPart,
)
from shared.kernel.ticket import TICKETS, TicketState


async def append_ticket_events(
    platform: Platform,
    ticket_id: str,
    payloads: Sequence[EventPayload],
    *,
    role: str = "dispatcher",
    service: str = "dispatch",
) -> TicketCommandResult:
    """Record ``payloads`` on the ticket through ``service``'s executor (its inline read
    models included), as that service's command would."""
    subject = "system" if role == "system" else f"{role}-1"
    context = CommandContext(actor=Actor(subject=subject, role=role), service=service)
    handling = Handling(platform.executor(service), Invocation(context), platform.settings)

    def decide(_command: None, _state: TicketState) -> list[EventPayload]:
        return list(payloads)

    return await platform.db.write(lambda c: handling.execute(c, TICKETS, ticket_id, None, decide))


async def dispatch_ticket(
    platform: Platform,
    ticket_id: str,
    *,
    service_point_id: str,
    technician_id: str = "tech-1",
    region: str = "east",
    starts_in: timedelta = timedelta(hours=2),
    window: timedelta = timedelta(hours=2),
    reason: str = "nearest service point with a free technician",
    redispatch: bool = False,
    role: str = "dispatcher",
) -> TicketCommandResult:
    start = platform.clock.now() + starts_in
    payload = TicketDispatched(
        region=region,
        service_point_id=service_point_id,
        technician_id=technician_id,
        appointment_start=start,
        appointment_end=start + window,
        reason=reason,
        redispatch=redispatch,
    )
    return await append_ticket_events(platform, ticket_id, [payload], role=role)


async def visit_ticket(
    platform: Platform,
    ticket_id: str,
    *,
    technician_id: str = "tech-1",
    arrived_at: datetime | None = None,
    role: str = "technician",
) -> TicketCommandResult:
    payload = TicketVisited(
        technician_id=technician_id,
        arrived_at=arrived_at or platform.clock.now(),
        findings="motor bearings worn",
    )
    return await append_ticket_events(platform, ticket_id, [payload], role=role)


async def repair_ticket(
    platform: Platform,
    ticket_id: str,
    parts_used: Sequence[UsedPart] = (),
    *,
    outcome: RepairOutcome | None = None,
    cost_borne_by: CostBearer = CostBearer.warranty,
    technician_id: str = "tech-1",
    role: str = "technician",
) -> TicketCommandResult:
    payload = TicketRepaired(
        outcome=outcome or (RepairOutcome.replaced if parts_used else RepairOutcome.fixed),
        parts_used=list(parts_used),
        labour_minutes=45,
        cost_borne_by=cost_borne_by,
        technician_id=technician_id,
    )
    return await append_ticket_events(platform, ticket_id, [payload], role=role)


async def project_feedback(platform: Platform) -> None:
    """Bring feedback's read models (compliance, scorecards, quality) up to date."""
    for projection in FEEDBACK_PROJECTIONS:
        await platform.runner.catch_up(projection)


class Lifecycle:
    """One object per test: ``await life.open()``, ``await life.dispatch(tid)``, …"""

    def __init__(self, platform: Platform, intake: httpx.AsyncClient, clock: ManualClock) -> None:
        self.platform = platform
        self.intake = intake
        self.clock = clock
        self._serial = 0

    async def open(
        self,
        *,
        region: str = "east",
        urgency: str = "normal",
        model: str = "WM-700",
        serial: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        self._serial += 1
        body: dict[str, Any] = copy.deepcopy(RECEIVE_EXAMPLE)
        body["address"]["region"] = region
        body["urgency"] = urgency
        body["product"]["model"] = model
        body["product"]["serial_number"] = serial or f"SN-{id(self) % 10000}-{self._serial:04d}"
        response = await self.intake.post("/tickets", json=body, headers=headers or {})
        assert response.status_code == 201, response.text
        return str(response.json()["ticket_id"])

    async def diagnose(
        self,
        ticket_id: str,
        *,
        complexity: str = "general",
        path: str = "on_site",
        category: str = "quality_defect",
        expected_parts: Sequence[str] = ("MOTOR-WM700",),
        remote_outcome: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "category": category,
            "complexity": complexity,
            "resolution_path": path,
            "expected_parts": list(expected_parts),
        }
        if remote_outcome:
            body["remote_outcome"] = remote_outcome
        response = await self.intake.post(f"/tickets/{ticket_id}/diagnosis", json=body)
        assert response.status_code in (200, 201), response.text

    async def write(
        self, ticket_id: str, *payloads: EventPayload, service: str = "dispatch"
    ) -> list[EventEnvelope]:
        """Append events as another service would (no rules checked: tests decide)."""
        result = await append_ticket_events(
            self.platform, ticket_id, payloads, role="system", service=service
        )
        return result.events

    async def dispatch(
        self,
        ticket_id: str,
        *,
        service_point: str = "sp-1",
        technician: str = "tech-1",
        window_hours: float = 4,
        redispatch: bool = False,
        region: str = "east",
    ) -> EventEnvelope:
        result = await dispatch_ticket(
            self.platform,
            ticket_id,
            service_point_id=service_point,
            technician_id=technician,
            region=region,
            starts_in=timedelta(0),
            window=timedelta(hours=window_hours),
            reason="re-dispatched after reopen" if redispatch else "nearest technician",
            redispatch=redispatch,
            role="system",
        )
        return result.events[0]

    async def visit(
        self, ticket_id: str, *, technician: str = "tech-1", arrived_at: datetime | None = None
    ) -> EventEnvelope:
        result = await visit_ticket(
            self.platform, ticket_id, technician_id=technician, arrived_at=arrived_at, role="system"
        )
        return result.events[0]

    async def repair(
        self,
        ticket_id: str,
        *,
        outcome: str = "fixed",
        technician: str = "tech-1",
        parts: Sequence[UsedPart] = (),
    ) -> EventEnvelope:
        result = await repair_ticket(
            self.platform,
            ticket_id,
            parts,
            outcome=RepairOutcome(outcome),
            technician_id=technician,
            role="system",
        )
        return result.events[0]

    async def breach(self, ticket_id: str, deadline: str, due_at: datetime) -> EventEnvelope:
        now = self.clock.now()
        payload = SlaBreached(
            deadline=SlaDeadline(deadline),
            due_at=due_at,
            detected_at=now,
            overdue_minutes=max(0, int((now - due_at).total_seconds() // 60)),
        )
        return (await self.write(ticket_id, payload))[0]

    async def part_returned(
        self, ticket_id: str, part_number: str, *, late: bool = False, service_point: str = "sp-1"
    ) -> EventEnvelope:
        payload = OldPartReturned(
            part_number=part_number,
            location_id="loc-east",
            service_point_id=service_point,
            due_at=self.clock.now() + timedelta(days=-1 if late else 7),
            late=late,
        )
        return (await self.write(ticket_id, payload, service="parts"))[0]

    async def part_overdue(
        self, ticket_id: str, part_number: str, *, service_point: str = "sp-1"
    ) -> EventEnvelope:
        now = self.clock.now()
        payload = OldPartReturnOverdue(
            part_number=part_number,
            service_point_id=service_point,
            due_at=now - timedelta(days=1),  # as ``part_returned(late=True)`` now: one return
            detected_at=now,
        )
        return (await self.write(ticket_id, payload, service="parts"))[0]

    async def flag_repeat(self, ticket_id: str, earlier_ticket_id: str) -> EventEnvelope:
        payload = RepeatRepairFlagged(
            earlier_ticket_id=earlier_ticket_id,
            earlier_repaired_at=self.clock.now() - timedelta(days=3),
            serial_number="SN-REPEAT",
            window_days=30,
        )
        return (await self.write(ticket_id, payload))[0]

    async def through_repair(
        self,
        ticket_id: str | None = None,
        *,
        service_point: str = "sp-1",
        technician: str = "tech-1",
        parts: Sequence[UsedPart] = (),
        region: str = "east",
    ) -> str:
        """received → diagnosed → dispatched → visited → repaired, an hour apart."""
        tid = ticket_id or await self.open(region=region)
        self.clock.advance(hours=1)
        await self.diagnose(tid)
        self.clock.advance(hours=1)
        await self.dispatch(tid, service_point=service_point, technician=technician, region=region)
        self.clock.advance(hours=1)
        await self.visit(tid, technician=technician)
        self.clock.advance(hours=1)
        await self.repair(tid, technician=technician, parts=parts)
        return tid


def warranty_part(part_number: str = "MOTOR-WM700") -> UsedPart:
    return UsedPart(
        part_number=part_number, new_serial="NEW-1", old_serial="OLD-1", under_warranty=True
    )

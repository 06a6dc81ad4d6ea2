"""The feedback service's projections: pure functions of events, rebuilt by replay.

``feedback_compliance`` recomputes a ticket's whole row from the ticket's stream (up to
the event being applied) on every event: a ticket has a few dozen events at most, and
recomputing makes incremental and rebuilt rows identical by construction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.feedback.compliance import ITEMS, TicketCompliance, compute
from services.feedback.tables import (
    compliance_tickets,
    quality_alerts,
    repairs,
    scorecard_deductions,
    scorecard_items,
)
from shared.eventstore.ledger import EventStore
from shared.kernel.events.envelope import EventEnvelope, canonical_json
from shared.kernel.events.quality import QualityAlertRaised, ScorecardItemRecorded
from shared.kernel.events.registry import typed_payload


def compliance_values(c: TicketCompliance) -> dict[str, Any]:
    checklist = {name: c.items[name].as_dict() for name in ITEMS}
    checklist["first_time_fix"] = c.first_time_fix.as_dict()
    facts = {
        "follow_ups": c.follow_ups,
        "complaints": c.complaints,
        "visits": c.visits,
        "repairs": c.repairs,
        "deductions": c.deductions,
        "corrections": c.corrections,
    }
    return {
        "ticket_id": c.ticket_id,
        "ticket_number": c.ticket_number,
        "region": c.region,
        "month": c.month,
        "received_at": c.received_at,
        "product_model": c.product_model,
        "fault_category": c.fault_category,
        "agent_id": c.agent_id,
        "service_point_id": c.service_point_id,
        "technician_id": c.technician_id,
        "status": c.status,
        "compliant": c.compliant,
        **{name: c.items[name].status for name in ITEMS},
        "first_time_fix": c.first_time_fix.status,
        "checklist": canonical_json(checklist),
        "facts": canonical_json(facts),
        "version": c.version,
    }


class ComplianceProjection:
    name: ClassVar[str] = "feedback_compliance"
    tables: ClassVar[tuple[Table, ...]] = (compliance_tickets, scorecard_deductions, repairs)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self) -> None:
        self.store = EventStore()

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        stream = await self.store.read_stream(
            conn, event.stream_id, to_version=event.stream_version
        )
        if not stream or stream[-1].event_id != event.event_id:
            stream = [*[e for e in stream if e.stream_version < event.stream_version], event]
        result = compute(stream)
        ticket_id = event.stream_id
        for table in (compliance_tickets, scorecard_deductions, repairs):
            await conn.execute(delete(table).where(table.c.ticket_id == ticket_id))
        if result is None:
            return
        await conn.execute(insert(compliance_tickets).values(**compliance_values(result)))
        if result.deductions:
            await conn.execute(
                insert(scorecard_deductions),
                [
                    {
                        "ticket_id": ticket_id,
                        "seq": n,
                        "kind": d["kind"],
                        "month": d["month"],
                        "at": datetime.fromisoformat(d["at"]),
                        "service_point_id": d["service_point_id"],
                        "region": d["region"],
                        "earlier_ticket_id": d["earlier_ticket_id"],
                        "event_ids": canonical_json(d["event_ids"]),
                    }
                    for n, d in enumerate(result.deductions, start=1)
                ],
            )
        if result.repairs:
            await conn.execute(
                insert(repairs),
                [
                    {
                        "event_id": r["event_id"],
                        "ticket_id": ticket_id,
                        "day": r["day"],
                        "product_model": result.product_model,
                        "fault_category": r["fault_category"],
                    }
                    for r in result.repairs
                ],
            )


class ScorecardItemsProjection:
    name: ClassVar[str] = "feedback_scorecard_items"
    tables: ClassVar[tuple[Table, ...]] = (scorecard_items,)
    stream_types: ClassVar[tuple[str, ...]] = ("scorecard",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        if not isinstance(payload, ScorecardItemRecorded):
            return
        await conn.execute(
            insert(scorecard_items).values(
                event_id=str(event.event_id),
                service_point_id=payload.service_point_id,
                region=payload.region,
                item=payload.item.value,
                month=payload.occurred_on.strftime("%Y-%m"),
                occurred_on=payload.occurred_on.isoformat(),
                evidence=payload.evidence,
                ticket_ids=canonical_json(payload.ticket_ids),
                actor=event.actor.subject,
                recorded_at=event.recorded_at,
            )
        )


class QualityAlertsProjection:
    name: ClassVar[str] = "feedback_quality_alerts"
    tables: ClassVar[tuple[Table, ...]] = (quality_alerts,)
    stream_types: ClassVar[tuple[str, ...]] = ("quality",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        if not isinstance(payload, QualityAlertRaised):
            return
        await conn.execute(
            insert(quality_alerts).values(
                event_id=str(event.event_id),
                day=payload.day.isoformat(),
                product_model=payload.product_model,
                fault_category=payload.fault_category.value,
                count=payload.count,
                threshold=payload.threshold,
                ticket_ids=canonical_json(payload.ticket_ids),
                raised_at=event.occurred_at,
            )
        )


COMPLIANCE = ComplianceProjection()
SCORECARD_ITEMS = ScorecardItemsProjection()
QUALITY_ALERTS = QualityAlertsProjection()
PROJECTIONS = (COMPLIANCE, SCORECARD_ITEMS, QUALITY_ALERTS)

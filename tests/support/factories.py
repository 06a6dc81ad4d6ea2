"""Small builders of valid domain objects for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.kernel.events.envelope import Actor, CommandContext
from shared.kernel.events.tickets import (
    Address,
    Customer,
    Problem,
    Product,
    TicketDiagnosed,
    TicketReceived,
)

AGENT = Actor(subject="agent-7", role="call_center_agent")


def context(service: str = "intake", actor: Actor = AGENT) -> CommandContext:
    return CommandContext(actor=actor, service=service)


def received(number: int = 1, region: str = "east", **overrides: Any) -> TicketReceived:
    data: dict[str, Any] = {
        "ticket_number": f"TL-20261102-{number:06d}",
        "customer": Customer(name="Li Wei", phone="13812345678"),
        "address": Address(line="1 Garden Road", city="Hangzhou", region=region),
        "product": Product(
            model="WM-700", serial_number=f"SN{number:05d}", purchase_date=date(2026, 3, 1)
        ),
        "warranty_status": "in_warranty",
        "problem": Problem(symptom="drum does not spin", frequency="always", environment="kitchen"),
        "urgency": "normal",
        "channel": "phone",
        "response_due_at": datetime(2026, 11, 3, 9, tzinfo=UTC),
    }
    data.update(overrides)
    return TicketReceived(**data)


def diagnosed(**overrides: Any) -> TicketDiagnosed:
    data: dict[str, Any] = {
        "category": "quality_defect",
        "complexity": "general",
        "resolution_path": "on_site",
        "expected_parts": ["MOTOR-1"],
        "resolution_due_at": datetime(2026, 11, 3, 9, tzinfo=UTC) + timedelta(hours=24),
    }
    data.update(overrides)
    return TicketDiagnosed(**data)


def new_ticket_id() -> str:
    return str(uuid.uuid4())

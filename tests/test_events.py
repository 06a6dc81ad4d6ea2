"""Event model: strict payloads, canonical hashing, upcasting in one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.kernel.events import registry
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.tickets import TicketClosed
from tests.support.factories import received


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TicketClosed(reason="ok", surprise=True)
    data = received().model_dump(mode="json")
    data["customer"]["email"] = "x@example.com"
    with pytest.raises(ValidationError):
        type(received()).model_validate(data)


def test_payloads_are_immutable() -> None:
    event = received()
    with pytest.raises(ValidationError):
        event.urgency = "critical"  # type: ignore[misc]


def test_upcasting_turns_old_versions_into_the_current_model() -> None:
    class DemoRenamed(EventPayload, event_type="DemoRenamed", schema_version=3, stream_type="demo"):
        full_name: str
        source: str

    @registry.upcaster("DemoRenamed", 1)
    def _v1_to_v2(payload: dict) -> dict:
        return {"full_name": payload["name"]}

    @registry.upcaster("DemoRenamed", 2)
    def _v2_to_v3(payload: dict) -> dict:
        return {**payload, "source": "legacy"}

    try:
        assert registry.upcast("DemoRenamed", 1, {"name": "Li"}) == {
            "full_name": "Li",
            "source": "legacy",
        }
        assert (
            registry.upcast("DemoRenamed", 3, {"full_name": "Li", "source": "x"})["source"] == "x"
        )
    finally:
        registry._PAYLOADS.pop("DemoRenamed")
        registry._UPCASTERS.pop(("DemoRenamed", 1))
        registry._UPCASTERS.pop(("DemoRenamed", 2))
    assert "DemoRenamed" not in registry.all_payload_classes()

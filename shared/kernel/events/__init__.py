"""Event schemas: the envelope, typed payloads and their registry."""

from shared.kernel.events.envelope import (
    GENESIS_HASH,
    SYSTEM_ACTOR,
    Actor,
    CommandContext,
    EventEnvelope,
    EventPayload,
    canonical_json,
)
from shared.kernel.events.registry import payload_class, topic_for, typed_payload, upcast

__all__ = [
    "GENESIS_HASH",
    "SYSTEM_ACTOR",
    "Actor",
    "CommandContext",
    "EventEnvelope",
    "EventPayload",
    "canonical_json",
    "payload_class",
    "topic_for",
    "typed_payload",
    "upcast",
]

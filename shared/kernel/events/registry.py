"""Payload registry and upcasting: the one place that knows every event type and version."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.kernel.events.envelope import EventEnvelope, EventPayload

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnreadableEvent(Exception):
    """A stored row that makes no event (edited by hand, or damaged): what reads it stops
    with this (HTTP: a 500 naming the position), ``ticketline verify`` reports it."""

    def __init__(self, position: Any, cause: Exception) -> None:
        self.position = position
        self.cause = cause
        super().__init__(f"the stored row at position {position} is not an event: {cause}")

    @property
    def explained(self) -> str:
        """What a caller is told (the HTTP problem, the event stream's last event)."""
        return (
            f"the event at position {self.position} is damaged: nothing was changed; "
            "`ticketline verify` reports the ledger's state"
        )


_PAYLOADS: dict[str, type[EventPayload]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}

# One Kafka topic per event family; the key is always the stream id.
TOPIC_FAMILY_BY_STREAM_TYPE: dict[str, str] = {
    "ticket": "tickets",
    "service_point": "network",
    "technician": "network",
    "network": "network",
    # The SLA terms (calendars, policies) travel with the network's descriptions.
    "calendar": "network",
    "sla_policy": "network",
    "stock": "parts",
    "part": "parts",
    "location": "parts",
    "requisition": "parts",
    "quality": "quality",
    "scorecard": "quality",
    "customer": "customers",
    # Signed chain-head checkpoints (docs/checkpoints.md): a topic of their own.
    "ledger": "ledger",
}


class UnknownEventType(LookupError):
    pass


def register_payload(cls: type[EventPayload]) -> None:
    existing = _PAYLOADS.get(cls.event_type)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"event type {cls.event_type!r} registered twice")
    _PAYLOADS[cls.event_type] = cls


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning a ``from_version`` payload into ``from_version + 1``."""

    def decorate(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return decorate


def payload_class(event_type: str) -> type[EventPayload]:
    _load_all()
    try:
        return _PAYLOADS[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def all_payload_classes() -> dict[str, type[EventPayload]]:
    _load_all()
    return dict(sorted(_PAYLOADS.items()))


def upcast(event_type: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    current = payload_class(event_type).schema_version
    version = schema_version
    while version < current:
        payload = _UPCASTERS[(event_type, version)](payload)
        version += 1
    return payload


def payload_dict(envelope: EventEnvelope) -> dict[str, Any]:
    """The envelope's payload as stored (JSON types), upcast to the current version. No
    validation: what the ledger holds was validated when it was appended."""
    current = _CURRENT_VERSION.get(envelope.event_type)
    if current is None:
        current = _CURRENT_VERSION[envelope.event_type] = payload_class(
            envelope.event_type
        ).schema_version
    if envelope.schema_version == current:
        return envelope.payload
    return upcast(envelope.event_type, envelope.schema_version, envelope.payload)


# The current schema version per event type (payload classes are registered once).
_CURRENT_VERSION: dict[str, int] = {}


def typed_payload(envelope: EventEnvelope) -> EventPayload:
    """The envelope's payload as its current-version pydantic model. Personal fields may
    hold their stored (sealed) form or a marker: decisions never need them, and those that
    do read a stream opened by the event store (``EventStore.open``)."""
    from shared.kernel.personal import STORED

    cls = payload_class(envelope.event_type)
    try:
        return cls.model_validate(payload_dict(envelope), context=STORED)
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's, or an upcaster's
        # Validated when appended: a stored row edited into another payload since.
        raise UnreadableEvent(envelope.position, exc) from exc


def topic_for(stream_type: str, prefix: str) -> str:
    return f"{prefix}.{TOPIC_FAMILY_BY_STREAM_TYPE.get(stream_type, stream_type)}"


_loaded = False


def _load_all() -> None:
    # Importing the modules registers their payload classes: every module of the
    # shared.kernel.events package is an event family (tickets, network, parts, quality, …).
    # Once per process: this sits on every decode.
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil

    import shared.kernel.events as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in {"envelope", "registry"}:
            importlib.import_module(f"shared.kernel.events.{module.name}")
    _loaded = True

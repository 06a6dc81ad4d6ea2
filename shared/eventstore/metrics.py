"""Process-local Prometheus metrics of the event store: appends, relay, projections."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from prometheus_client import Counter

EVENTS_APPENDED = Counter(
    "ticketline_events_appended",
    "Events appended to the ledger by this process, counted after the commit.",
    ["service", "event_type"],
)
RELAY_PUBLISHED = Counter(
    "ticketline_relay_published",
    "Outbox rows this process published to Kafka (acknowledged and marked).",
)
RELAY_REQUEUED = Counter(
    "ticketline_relay_requeued",
    "Events this process queued again for publishing because the broker lost messages "
    "(a truncated or rebuilt topic).",
    ["topic"],
)
PROJECTION_APPLIED = Counter(
    "ticketline_projection_events_applied",
    "Events this process applied to a projection (duplicates excluded).",
    ["projection"],
)
PROJECTION_DUPLICATES = Counter(
    "ticketline_projection_events_skipped",
    "Events this process received again and skipped (already applied): redeliveries after "
    "a relay or projector restart, or events a service already applied inline.",
    ["projection"],
)
PROJECTION_PARKED = Counter(
    "ticketline_projection_events_parked",
    "Events this process parked (a projection or reactor could not apply them after its "
    "retries); the open ones are the ticketline_parked_events gauge.",
    ["projection"],
)

# Key in the connection's info dict: events appended in the open transaction.
_APPENDED_KEY = "ticketline.appended"


def note_appended(info: MutableMapping[Any, Any], pairs: Iterable[tuple[str, str]]) -> None:
    """Remember (service, event_type) of events appended in the running transaction."""
    info.setdefault(_APPENDED_KEY, []).extend(pairs)


def take_appended(info: MutableMapping[Any, Any]) -> list[tuple[str, str]]:
    return info.pop(_APPENDED_KEY, None) or []


def count_appended(pairs: Iterable[tuple[str, str]]) -> None:
    """Called once the transaction committed: a rolled-back append never counts."""
    for service, event_type in pairs:
        EVENTS_APPENDED.labels(service=service, event_type=event_type).inc()

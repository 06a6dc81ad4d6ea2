"""Process-local Prometheus metrics of the event store: appends, relay, projections."""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
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

PERSONAL_DATA_UNREADABLE = Counter(
    "ticketline_personal_data_unreadable",
    "Customer data keys (what=key) or sealed values (what=value) this process could not "
    "decrypt: a corrupted key row or ciphertext. Alert on any increase "
    "(docs/personal-data.md).",
    ["what"],
)

# Key in the connection's info dict: what the open transaction appended — (service,
# event_type) pairs — and callbacks to run once it commits.
_APPENDED_KEY = "ticketline.appended"
Committed = tuple[str, str] | Callable[[], None]


def note_appended(info: MutableMapping[Any, Any], pairs: Iterable[tuple[str, str]]) -> None:
    """Remember (service, event_type) of events appended in the running transaction."""
    info.setdefault(_APPENDED_KEY, []).extend(pairs)


def note_committed(info: MutableMapping[Any, Any], callback: Callable[[], None]) -> None:
    """Run ``callback`` once the running transaction commits; never if it rolls back
    (e.g. remember a data key created in it: shared/eventstore/personal)."""
    info.setdefault(_APPENDED_KEY, []).append(callback)


def appended_here(info: MutableMapping[Any, Any]) -> bool:
    """Whether the open transaction appended events (and so holds the position counter)."""
    return any(isinstance(item, tuple) for item in info.get(_APPENDED_KEY, ()))


def take_appended(info: MutableMapping[Any, Any]) -> list[Committed]:
    return info.pop(_APPENDED_KEY, None) or []


# The counter's child per (service, event_type): ``labels()`` takes a lock and builds
# its key on every call, a measurable part of a one-event transaction.
_APPENDED_CHILDREN: dict[tuple[str, str], Any] = {}


def count_appended(items: Iterable[Committed]) -> None:
    """Called once the transaction committed: a rolled-back append never counts."""
    for item in items:
        if callable(item):
            item()
            continue
        child = _APPENDED_CHILDREN.get(item)
        if child is None:
            service, event_type = item
            child = EVENTS_APPENDED.labels(service=service, event_type=event_type)
            _APPENDED_CHILDREN[item] = child
        child.inc()

"""The SLA terms as the ledger holds them: policy and calendar versions read from their
streams (``sla_policy:<id>``, ``calendar:<id>``), for the clock (``shared.kernel.sla``).

Every version stays in its stream, so a ticket's clock always runs on the versions pinned
on it (``SlaPolicyApplied``), whenever it is asked: a rebuild or an as-of view gives the
same figures. A ``TermsReader`` reads each stream once (a pass of the SLA job, a batch of
a projection, a what-if report).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection

from shared.eventstore.ledger import EventStore
from shared.kernel.calendar import DEFAULT_HORIZON, Calendar, build_calendar
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.sla import CalendarDefined, SlaPolicyApplied, SlaPolicyDefined
from shared.kernel.sla import (
    RESOLUTION,
    RESPONSE,
    SlaClock,
    SlaPin,
    SlaPolicy,
    SlaTerms,
    calendar_stream,
    policy_from,
    policy_stream,
    sla_clock,
)
from shared.kernel.ticket import TICKETS, TicketState


class ConfiguredTerms(Protocol):
    """The settings' side of the terms (``SlaSettings``): the built-in policy, the horizon."""

    @property
    def horizon(self) -> timedelta: ...

    def builtin_policy(self) -> SlaPolicy: ...


class TermsReader:
    @classmethod
    def configured(cls, conn: Connection, store: EventStore, sla: ConfiguredTerms) -> TermsReader:
        """The reader of the configured built-in policy and horizon."""
        return cls(conn, store, sla.builtin_policy(), sla.horizon)

    def __init__(
        self,
        conn: Connection,
        store: EventStore,
        builtin: SlaPolicy | None = None,
        horizon: timedelta = DEFAULT_HORIZON,
    ) -> None:
        self.conn = conn
        self.store = store
        self.builtin = builtin or SlaPolicy()
        self.horizon = horizon
        self._streams: dict[str, list[EventEnvelope]] = {}

    def _stream(self, stream_id: str) -> list[EventEnvelope]:
        found = self._streams.get(stream_id)
        if found is None:
            found = self._streams[stream_id] = list(self.store.read_stream(self.conn, stream_id))
        return found

    @staticmethod
    def _at(events: list[EventEnvelope], version: int | None) -> EventEnvelope | None:
        if not events:
            return None
        if version is None:
            return events[-1]
        return next((e for e in events if e.stream_version == version), None)

    def policy(self, policy_id: str, version: int | None = None) -> SlaPolicy | None:
        """A policy version (None: the latest); None when it was never defined."""
        event = self._at(self._stream(policy_stream(policy_id)), version)
        if event is None:
            return None
        payload = typed_payload(event)
        assert isinstance(payload, SlaPolicyDefined)
        return policy_from(policy_id, event.stream_version, payload)

    def calendar(self, calendar_id: str, version: int | None = None) -> Calendar | None:
        """A calendar version (None: the latest); None when it was never defined."""
        event = self._at(self._stream(calendar_stream(calendar_id)), version)
        if event is None:
            return None
        payload = typed_payload(event)
        assert isinstance(payload, CalendarDefined)
        return build_calendar(calendar_id, event.stream_version, payload)

    def latest_calendars(self, ids: set[str]) -> dict[str, Calendar]:
        return {i: c for i in sorted(ids) if (c := self.calendar(i)) is not None}

    def current(self, policy_id: str, reason: str | None = None) -> SlaPin | None:
        """The policy's latest version and the latest versions of the calendars it names;
        None while the policy has no version (the built-in policy applies)."""
        policy = self.policy(policy_id)
        if policy is None:
            return None
        calendars = self.latest_calendars(policy.calendar_ids())
        applied = SlaPolicyApplied(
            policy_id=policy_id,
            policy_version=policy.version,
            calendar_versions={i: c.version for i, c in calendars.items()},
            reason=reason,
        )
        return SlaPin(SlaTerms(policy, calendars, self.horizon), applied)

    def for_ticket(self, state: TicketState) -> SlaTerms:
        """The terms pinned on the ticket (the built-in policy when none is); a deadline a
        re-evaluation left standing keeps the terms it ran on (``SlaTerms.standing``)."""
        terms = SlaTerms(self.builtin, {}, self.horizon)
        governing = dict.fromkeys((RESPONSE, RESOLUTION), terms)
        for pin in state.sla_pins:
            terms = self._pinned(pin)
            kept = {d.value for d in pin.standing}
            governing.update((d, terms) for d in governing if d not in kept)
        standing = {d: t for d, t in governing.items() if t is not terms}
        return replace(terms, standing=standing) if standing else terms

    def _pinned(self, pin: SlaPolicyApplied) -> SlaTerms:
        policy = self.policy(pin.policy_id, pin.policy_version) or self.builtin
        calendars = {
            i: c for i, v in pin.calendar_versions.items() if (c := self.calendar(i, v)) is not None
        }
        return SlaTerms(policy, calendars, self.horizon)


def ticket_clock(
    reader: TermsReader, ticket_id: str, at: datetime, *, as_of: datetime | None = None
) -> tuple[TicketState, SlaClock] | None:
    """A ticket's clock at ``at``, from the events recorded until ``as_of`` (all: None);
    None when no such ticket was received by then."""
    events = reader.store.read_stream(reader.conn, ticket_id, recorded_until=as_of)
    state = TICKETS.fold(ticket_id, events)
    if not state.exists or state.received_at is None:
        return None
    return state, sla_clock(state, reader.for_ticket(state), at)

"""The shape every stream type's rules take: the Decider pattern.

A ``Decider`` holds what is true of one stream type whatever the command: its initial
state, how one event changes the state (``evolve``), and where a stream sits (``scope``,
for the reach rule). Each command has a pure decide function with one signature,
``decide(command, state) -> events``; the facts a decision needs beyond the stream
(the time, a settings figure, a read model's answer) travel in the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.kernel.events.envelope import EventEnvelope, EventPayload, PendingEvent
from shared.kernel.events.registry import typed_payload
from shared.kernel.reach import NOWHERE_IN_PARTICULAR, Scope

S = TypeVar("S")
C = TypeVar("C")

Decided = Sequence[EventPayload | PendingEvent]
Decide = Callable[[C, S], Decided]


def _nowhere(_state: object) -> Scope:
    return NOWHERE_IN_PARTICULAR


def _always(_state: object) -> bool:
    return True


def _same(stream_id: str) -> str:
    return stream_id


@dataclass(frozen=True)
class Decider(Generic[S]):
    stream_type: str
    initial_state: Callable[[str], S]
    # (state, payload, when it occurred) -> state; must accept any event of the stream type.
    evolve: Callable[[S, EventPayload, datetime], S]
    scope: Callable[[S], Scope] = _nowhere
    # False while the stream has no events a caller could see (a reach check needs a scope).
    exists: Callable[[S], bool] = _always
    # Long streams whose state holds no personal data (a stock level gathers an event per
    # movement for years): the executor keeps their states and reads only what is newer.
    cache_states: bool = False
    # The id callers know the stream by (a "no …" answer names it), from its stream id.
    public_id: Callable[[str], str] = _same

    def fold(self, stream_id: str, events: Iterable[EventEnvelope]) -> S:
        return self.fold_on(self.initial_state(stream_id), events)

    def fold_on(self, state: S, events: Iterable[EventEnvelope]) -> S:
        """``state`` moved on by ``events`` (the ones after it, in order)."""
        for event in events:
            state = self.evolve(state, typed_payload(event), event.occurred_at)
        return state

    def run(
        self, state: S, command: C, decide: Decide[C, S], now: datetime
    ) -> tuple[list[PendingEvent], S]:
        """Decide, and the state the decided events lead to."""
        decided = [
            d if isinstance(d, PendingEvent) else PendingEvent(d) for d in decide(command, state)
        ]
        after = state
        for item in decided:
            after = self.evolve(after, item.payload, item.occurred_at or now)
        return decided, after


def described_so(last: BaseModel | None, description: BaseModel) -> bool:
    """``last`` (the event that last described a thing) says what ``description`` says,
    its reason aside: a replacement that would only repeat it records nothing — a PUT
    repeated (a retry after a timeout) does what the first did."""
    return last is not None and last.model_dump(exclude={"reason"}) == description.model_dump()

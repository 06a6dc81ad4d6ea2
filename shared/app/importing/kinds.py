"""What an importable kind of record is, and what deciding a batch of its rows yields.

A kind (service points, stock on hand, historical tickets …) belongs to the service that
owns its decisions and is declared in that service's ``ServiceModule.imports``. It reads
one row into a typed item (``parse``), names its natural key (``key``) and decides a batch
of items (``decide``) with the service's own decide functions, into ``Verdict`` values:
the events to append per stream and service (``Segment``), "already present", or the
row's problems. The engine (``engine.py``) commits the segments of a batch through the
services' executors in a few bulk appends, in one unit of work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection

from shared.app.importing.fields import Column, Fields, Problem, RowFailed, problems_of
from shared.eventstore.ledger import NEW_STREAM, EventStore, StreamHead
from shared.kernel.decider import Decide, Decider
from shared.kernel.errors import DomainError
from shared.kernel.events.envelope import EventPayload, PendingEvent

if TYPE_CHECKING:
    from shared.app.config import Settings
    from shared.app.importing.export import Unrepresentable
    from shared.app.importing.scratch import Remembered
    from shared.app.platform import Platform

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True)
class Segment:
    """Events one service appends to one stream for one row. ``head``: the stream's head
    the decision read (``NEW_STREAM`` for a new stream), or None to continue after the
    previous segment of the same stream in this batch (an earlier row's, or this row's).
    A row with several segments must not share a stream with another row."""

    service: str
    stream_id: str
    events: tuple[PendingEvent, ...]
    region: str | None = None
    head: StreamHead | None = NEW_STREAM


@dataclass(frozen=True)
class Verdict:
    """What became of one row: segments to append, already present, or problems."""

    line: int
    segments: tuple[Segment, ...] = ()
    present: bool = False
    problems: tuple[Problem, ...] = ()

    @property
    def events(self) -> int:
        return sum(len(s.events) for s in self.segments)


@dataclass(frozen=True)
class Parsed:
    """A row read into a kind's item, with its line and natural key."""

    line: int
    key: str
    item: Any


@dataclass
class KindContext:
    """What a kind knows while one file is imported. ``now``: the import's time (nothing
    imported happened later); ``validating``: a pass that writes nothing (a dry run, or the
    check before an all-or-nothing import), so rows of earlier batches are not in the
    database; ``memory``: what a kind keeps across the batches of one file (small kinds
    only: the network, whose rows name earlier rows as parents); ``remembered``: the same
    for what grows with the file, in a scratch file (a validating pass: its decisions are
    the ones written, so later rows see what earlier batches decided)."""

    settings: Settings
    now: datetime
    validating: bool
    zone: ZoneInfo | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    remembered: Remembered | None = None


class Kind:
    """Base of every importable kind (defaults for the optional parts)."""

    name: str = ""
    service: str = ""
    title: str = ""
    columns: tuple[Column, ...] = ()
    key_column: str = ""

    def parse(self, fields: Fields, context: KindContext) -> Any | None:
        raise NotImplementedError

    def key(self, item: Any) -> str:
        raise NotImplementedError

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        raise NotImplementedError

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any] | Unrepresentable]:
        """Every record as a row of this kind's format (``ticketline export --kind``), or
        why one cannot be."""
        raise NotImplementedError

    async def finish(self, platform: Platform, context: KindContext) -> None:
        """After the last batch was committed (not on a validating pass)."""


def run_at(
    decider: Decider[S], state: S, command: C, decide: Decide[C, S], at: datetime
) -> tuple[list[PendingEvent], S]:
    """Run a decide function as of ``at``: events it leaves undated occurred then."""
    decided, after = decider.run(state, command, decide, at)
    return [e if e.occurred_at else PendingEvent(e.payload, at) for e in decided], after


def guarded(
    line: int, field: str, work: Callable[[], Any], names: Mapping[str, str] | None = None
) -> Any:
    """``work()``, its domain or validation error turned into the row's problems."""
    try:
        return work()
    except (DomainError, ValidationError) as exc:
        raise RowFailed(problems_of(exc, line, field, names)) from None


def payloads(events: Sequence[PendingEvent]) -> list[EventPayload]:
    return [e.payload for e in events]


def each(batch: Sequence[Parsed], decide_one: Callable[[Parsed], Verdict]) -> list[Verdict]:
    """``decide_one`` for every row of a batch, in order; a row it refuses (``RowFailed``)
    gets its problems as its verdict."""
    out: list[Verdict] = []
    for parsed in batch:
        try:
            out.append(decide_one(parsed))
        except RowFailed as exc:
            out.append(Verdict(parsed.line, problems=tuple(exc.problems)))
    return out


def conflict(
    line: int,
    field: str,
    what: str,
    stored: object = None,
    given: object = None,
    *,
    remedy: str,
) -> RowFailed:
    """A natural key already present with other values: the import never overwrites.
    With the ``stored`` and ``given`` descriptions (dataclasses or models), the values
    that differ are named; ``remedy`` says what to do instead."""
    differing = differences(stored, given)
    said = f" ({'; '.join(differing)})" if differing else ""
    return RowFailed(
        [Problem(line, field, f"{what} is already present with other values{said}; {remedy}")]
    )


def differences(stored: object, given: object) -> list[str]:
    """``name: <stored> stored, <given> given`` for each field the two descriptions hold
    differently."""
    if dataclasses.is_dataclass(stored) and not isinstance(stored, type):
        names = [f.name for f in dataclasses.fields(stored)]
    elif isinstance(stored, BaseModel):
        names = list(type(stored).model_fields)
    else:
        return []
    return [
        f"{name}: {_shown(getattr(stored, name))} stored, {_shown(getattr(given, name))} given"
        for name in names
        if getattr(stored, name, None) != getattr(given, name, None)
    ]


def _shown(value: object) -> str:
    if isinstance(value, frozenset | set):
        value = sorted(value, key=str)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, BaseModel):  # a shift: "mon 09:00 18:00"
        return " ".join(str(v) for v in value.model_dump(mode="json").values())
    return "none" if value is None else str(value)

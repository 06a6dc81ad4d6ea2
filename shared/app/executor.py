"""The one way a command runs: load → decide (pure) → append → inline read models.

Every command of every service goes through ``Executor.execute`` (one stream) or
``Executor.commit`` (a decision spanning streams, e.g. a requisition reserving stock),
inside the caller's unit of work (``Database.write``), where the HTTP layer also keeps the
idempotency record. So a command is one transaction and one hop to the database.

The read models a service keeps inline (so its callers read their own writes) are
declared once per service and stream type, and applied here to whatever was appended.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import Connection

from shared.eventstore.ledger import ConcurrencyError, EventStore, StreamAppend, StreamHead
from shared.eventstore.projection import Projection
from shared.eventstore.runner import ProjectionRunner
from shared.kernel.clock import Clock
from shared.kernel.decider import Decide, Decider
from shared.kernel.errors import Forbidden, NotFound
from shared.kernel.events.envelope import (
    SYSTEM_ACTOR,
    CommandContext,
    EventEnvelope,
    PendingEvent,
)
from shared.kernel.reach import EVERYWHERE, Reach
from shared.readmodels.sla import TermsReader

if TYPE_CHECKING:
    from shared.app.config import Settings
    from shared.app.platform import Platform
    from shared.eventstore.personal import PersonalData

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True)
class Invocation:
    """Who runs a command and under which conditions: the actor and correlation
    (``context``), how far the caller sees (``reach``) and, from ``If-Match``, the stream
    version the caller last read (``expected_version``)."""

    context: CommandContext
    reach: Reach = EVERYWHERE
    expected_version: int | None = None


@dataclass(frozen=True)
class Handling:
    """What a command handler works with, whoever called it (a route, a reactor, a job):
    the service's executor, the invocation, and the settings to gather facts from."""

    executor: Executor
    invocation: Invocation
    settings: Settings

    @classmethod
    def for_system(
        cls, platform: Platform, service: str, cause: EventEnvelope | None = None
    ) -> Handling:
        """The service acting on its own (a reactor, a job) as the system, in the
        correlation of the event that caused it, when one did."""
        context = CommandContext(actor=SYSTEM_ACTOR, service=service)
        if cause is not None:
            context = CommandContext(
                actor=SYSTEM_ACTOR,
                service=service,
                correlation_id=UUID(cause.correlation_id),
                causation_id=UUID(cause.event_id),
            )
        return cls(platform.executor(service), Invocation(context), platform.settings)

    def now(self) -> datetime:
        return self.executor.clock.now()

    def personal(self) -> PersonalData:
        """The personal-data keys (every platform's store holds them)."""
        personal = self.executor.store.personal
        assert personal is not None, "the platform's store holds the personal-data keys"
        return personal

    def terms(self, conn: Connection) -> TermsReader:
        """The SLA terms as configured and as defined in the ledger."""
        return TermsReader.configured(conn, self.executor.store, self.settings.sla)

    def execute(
        self,
        conn: Connection,
        decider: Decider[S],
        stream_id: str,
        command: C,
        decide: Decide[C, S],
        *,
        loaded: Loaded[S] | None = None,
    ) -> Outcome[S]:
        return self.executor.execute(
            conn, self.invocation, decider, stream_id, command, decide, loaded=loaded
        )

    def visible(self, conn: Connection, decider: Decider[S], stream_id: str) -> Loaded[S]:
        return self.executor.visible(conn, decider, stream_id, self.invocation.reach)


def require_region(reach: Reach, stream_type: str, region: str | None) -> None:
    """What a regional caller creates (or moves) lands in its region too: else it could
    write what it may not read (a ticket, a network member elsewhere). 403 ``region``."""
    if not reach.allows_region(region):
        raise Forbidden(
            "region",
            f"the {stream_type} would be in region {region}, outside the caller's region "
            f"{reach.region}",
        )


# How many kept states an executor holds at most (up to a few kB each: imported usage).
_KEPT_STATES = 10_000


def _head(events: Sequence[EventEnvelope]) -> StreamHead:
    return StreamHead(events[-1].stream_version, events[-1].hash) if events else StreamHead()


@dataclass(frozen=True)
class Loaded(Generic[S]):
    stream_id: str
    state: S
    head: StreamHead


@dataclass(frozen=True)
class Outcome(Generic[S]):
    before: S
    after: S
    events: list[EventEnvelope]

    @property
    def version(self) -> int:
        return getattr(self.after, "version", 0)


class Executor:
    def __init__(
        self,
        store: EventStore,
        runner: ProjectionRunner,
        clock: Clock,
        inline: Mapping[str, Sequence[Projection]],
    ) -> None:
        self.store = store
        self.runner = runner
        self.clock = clock
        self.inline = inline
        # States of the deciders that keep them (``Decider.cache_states``), by stream.
        self._states: dict[tuple[str, str], Any] = {}

    def load(self, conn: Connection, decider: Decider[S], stream_id: str) -> Loaded[S]:
        held = _HELD_BACK.get()
        if held is not None and stream_id in held.streams:
            held.flush(conn)  # a decision on a stream with appends held back sees them
        if decider.cache_states:
            return self._load_cached(conn, decider, stream_id)
        events = self.store.read_stream(conn, stream_id)
        head = StreamHead(events[-1].stream_version, events[-1].hash) if events else StreamHead()
        # Decisions see personal fields in clear (a correction compares old and new).
        opened = self.store.open(conn, events)
        return Loaded(stream_id, decider.fold(stream_id, opened), head)

    def _load_cached(self, conn: Connection, decider: Decider[S], stream_id: str) -> Loaded[S]:
        """The kept state moved on by the events after it. The kept head is read again
        with them and must be in the ledger as kept: a state folded from a transaction
        that then rolled back (a group commit that failed) is never built on."""
        key = (decider.stream_type, stream_id)
        kept: Loaded[S] | None = self._states.get(key)
        if kept is not None and kept.head.version:
            events = self.store.read_stream(conn, stream_id, from_version=kept.head.version)
            if events and events[0].hash == kept.head.hash:
                newer = events[1:]
                if not newer:
                    return kept
                state = decider.fold_on(kept.state, newer)
                return self._keep(key, Loaded(stream_id, state, _head(newer)))
        events = self.store.read_stream(conn, stream_id)
        state = decider.fold(stream_id, events)
        return self._keep(key, Loaded(stream_id, state, _head(events)))

    def _keep(self, key: tuple[str, str], loaded: Loaded[S]) -> Loaded[S]:
        if len(self._states) >= _KEPT_STATES:
            self._states.clear()  # cheap to fold again; no eviction bookkeeping per load
        self._states[key] = loaded
        return loaded

    def visible(
        self, conn: Connection, decider: Decider[S], stream_id: str, reach: Reach
    ) -> Loaded[S]:
        """The stream's state, or NotFound outside the caller's reach."""
        loaded = self.load(conn, decider, stream_id)
        self.require_reach(decider, loaded, reach)
        return loaded

    @staticmethod
    def require_reach(decider: Decider[S], loaded: Loaded[S], reach: Reach) -> None:
        if decider.exists(loaded.state) and not reach.allows(decider.scope(loaded.state)):
            raise NotFound(  # in the words of the answer to an id nobody registered
                f"{decider.stream_type}_not_found",
                f"no {decider.stream_type.replace('_', ' ')} {decider.public_id(loaded.stream_id)}",
            )

    def execute(
        self,
        conn: Connection,
        invocation: Invocation,
        decider: Decider[S],
        stream_id: str,
        command: C,
        decide: Decide[C, S],
        *,
        loaded: Loaded[S] | None = None,
    ) -> Outcome[S]:
        """Run one command against one stream (``loaded``: its state, if the caller has
        already loaded it in this unit of work to gather facts)."""
        loaded = loaded or self.load(conn, decider, stream_id)
        self.require_reach(decider, loaded, invocation.reach)
        # A stream with nothing in it: the command's own refusal first (404, no such ticket),
        # not a version that no caller could have read.
        exists = loaded.head.version > 0
        if exists:
            require_version(invocation, loaded)
        # One time for the decision and its record: the state answered (``after``) holds
        # the times the ledger holds, so a replayed answer is the same answer.
        now = self.clock.now()
        decided, after = decider.run(loaded.state, command, decide, now)
        if not exists:
            require_version(invocation, loaded)
        region = decider.scope(after).region
        require_region(invocation.reach, decider.stream_type, region)
        written = self.commit(
            conn,
            invocation.context,
            [StreamAppend(stream_id, decided, loaded.head, region)],
            recorded_at=now,
        )
        return Outcome(loaded.state, after, written)

    def commit(
        self,
        conn: Connection,
        context: CommandContext,
        appends: Sequence[StreamAppend],
        *,
        recorded_at: datetime | None = None,
    ) -> list[EventEnvelope]:
        """Append what a decision produced (one or several streams) and apply the inline
        read models to it, in the caller's transaction. The inline read models' stream
        locks are taken before the append, in the order projectors take them (stream
        locks, then the position counter), so the two never wait on each other in a
        cycle. Inside :meth:`appends_held_back` the appends wait for its end (nothing is
        returned)."""
        held = _HELD_BACK.get()
        if held is not None and held.executor is self:
            held.add(context, appends, recorded_at)
            return []
        self._lock_inline(conn, appends)
        written = self.store.append(conn, appends, context, recorded_at=recorded_at)
        self._apply_inline(conn, written)
        return written

    @contextmanager
    def appends_held_back(self, conn: Connection) -> Iterator[None]:
        """Many decisions in one transaction (a reactor's batch) append together at the
        end (:meth:`commit_in_turn`). Appended one by one, the first append would take
        the position counter, which every writer of the ledger waits for, and keep it
        through every later decision (seconds for a batch of a few hundred); held back,
        the counter is held for the appends alone. A decision on a stream with appends
        held back first makes them (``load``), so it sees them; a read model they update
        inline is updated at the end only, so this is for decisions that read the streams
        they decide on (the dispatch reactors), not such read models."""
        if _HELD_BACK.get() is not None:
            yield
            return
        held = _HeldBack(self)
        # A context variable, not the connection's info: it is the unit of work's (its
        # thread, or its greenlet on PostgreSQL), and reset on the way out whatever
        # happens (a unit cancelled mid-statement must not touch its connection then).
        token = _HELD_BACK.set(held)
        try:
            yield
            held.flush(conn)
        finally:
            _HELD_BACK.reset(token)

    def commit_in_turn(
        self,
        conn: Connection,
        groups: Sequence[tuple[CommandContext, Sequence[StreamAppend]]],
        recorded_at: Sequence[datetime | None] = (),
    ) -> list[EventEnvelope]:
        """Appends made in turn, each group in its own context, as one decision: a batch
        of imported history, each service's events in its name. The inline read models'
        locks are taken once before, and they are applied once to everything after. An
        append without a head continues after its stream's events of an earlier group.
        ``recorded_at``: each group's decision time (default: now)."""
        self._lock_inline(conn, [a for _, appends in groups for a in appends])
        heads: dict[str, StreamHead] = {}
        written: list[EventEnvelope] = []
        for n, (context, appends) in enumerate(groups):
            ready = [
                a
                if a.head is not None or a.stream_id not in heads
                else StreamAppend(a.stream_id, a.events, heads[a.stream_id], a.region)
                for a in appends
            ]
            at = recorded_at[n] if n < len(recorded_at) else None
            events = self.store.append(conn, ready, context, recorded_at=at)
            heads.update((e.stream_id, StreamHead(e.stream_version, e.hash)) for e in events)
            written += events
        self._apply_inline(conn, written)
        return written

    def _lock_inline(self, conn: Connection, appends: Sequence[StreamAppend]) -> None:
        inline = [
            (projection, stream_ids)
            for stream_type, projections in self.inline.items()
            if (stream_ids := {a.stream_id for a in appends if _stream_type(a) == stream_type})
            for projection in projections
        ]
        self.runner.lock_all(conn, [(p.name, sid) for p, ids in inline for sid in ids])

    def _apply_inline(self, conn: Connection, written: Sequence[EventEnvelope]) -> None:
        by_type: dict[str, list[EventEnvelope]] = {}
        for event in written:
            by_type.setdefault(event.stream_type, []).append(event)
        for stream_type, events in by_type.items():
            for projection in self.inline.get(stream_type, ()):
                self.runner.apply(conn, projection, events)


# The appends held back by the running unit of work (``Executor.appends_held_back``).
_HELD_BACK: ContextVar[_HeldBack | None] = ContextVar("ticketline_held_back", default=None)


class _HeldBack:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.groups: list[tuple[CommandContext, Sequence[StreamAppend]]] = []
        self.times: list[datetime | None] = []
        self.streams: set[str] = set()

    def add(
        self, context: CommandContext, appends: Sequence[StreamAppend], at: datetime | None
    ) -> None:
        appends = [a for a in appends if a.events]
        if appends:
            self.groups.append((context, appends))
            self.times.append(at)
            self.streams.update(a.stream_id for a in appends)

    def flush(self, conn: Connection) -> None:
        groups, times = self.groups, self.times
        self.groups, self.times, self.streams = [], [], set()
        if groups:
            self.executor.commit_in_turn(conn, groups, times)


def _stream_type(append: StreamAppend) -> str | None:
    first = next(iter(append.events), None)
    if first is None:
        return None
    payload = first.payload if isinstance(first, PendingEvent) else first
    return payload.stream_type


def require_version(invocation: Invocation, loaded: Loaded[Any]) -> None:
    """``If-Match``: the version of the stream the command addresses, as the caller read it."""
    expected = invocation.expected_version
    if expected is not None and expected != loaded.head.version:
        raise ConcurrencyError(loaded.stream_id, expected, loaded.head.version)

"""Committing a batch of decided rows: bulk appends through the services' executors.

A batch's segments are grouped by round (a row's first segment, its second, …) and, in a
round, by service: each group is one ``Executor.commit`` — one ``store.append`` of many
streams — in the service's name, so a ticket's history keeps its events in order and
each event names the service whose decide function made it. Segments of one stream in
one round (rows continuing a stream) become one stream append.

Every imported event carries the operator as actor and the batch id as correlation and
causation id (``shared/kernel/imports.py``). The executor (``Executor.commit_in_turn``: the
groups in turn, the inline read models applied once per batch) keeps the services'
inline read models but the per-ticket ones other than ``ticket_state`` (dispatch flags,
compliance), which read whole streams per ticket: the projector catches up with those
after the import, as after any burst of writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import Connection

from shared.app.executor import Executor
from shared.app.importing import runs
from shared.app.importing.kinds import Kind, KindContext, Parsed, Segment, Verdict
from shared.app.importing.report import Tally
from shared.app.platform import SHARED_INLINE, Platform
from shared.eventstore.ledger import ConcurrencyError, StreamAppend, StreamHead
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import Actor, CommandContext, PendingEvent


class Interrupted(Exception):
    """The writing pass cannot go on (resumable after the last committed batch)."""


def import_executor(platform: Platform) -> Executor:
    """An executor keeping every service's inline read models but the per-ticket ones
    other than the shared ``ticket_state``."""
    from shared.app.registry import SERVICES, inline_projections

    inline: dict[str, list[Projection]] = {}
    for service in SERVICES:
        for stream_type, projections in inline_projections(service).items():
            if stream_type != "ticket":
                inline.setdefault(stream_type, []).extend(projections)
    inline["ticket"] = list(SHARED_INLINE["ticket"])
    return Executor(
        platform.store, platform.runner, platform.clock, {k: tuple(v) for k, v in inline.items()}
    )


@dataclass
class _Pending:
    head: StreamHead | None
    region: str | None
    events: list[PendingEvent] = field(default_factory=list)


def rounds(verdicts: Sequence[Verdict]) -> list[dict[str, dict[str, _Pending]]]:
    """round → service → stream → what to append (streams in first-touched order)."""
    out: list[dict[str, dict[str, _Pending]]] = []
    for verdict in verdicts:
        for index, segment in enumerate(verdict.segments):
            while len(out) <= index:
                out.append({})
            streams = out[index].setdefault(segment.service, {})
            pending = streams.get(segment.stream_id)
            if pending is None:
                pending = streams[segment.stream_id] = _Pending(segment.head, segment.region)
            pending.events.extend(segment.events)
    return out


class Committer:
    def __init__(
        self, platform: Platform, kind: Kind, operator: Actor, batch_id: str, skip_invalid: bool
    ) -> None:
        self.platform = platform
        self.kind = kind
        self.batch_id = batch_id
        self.skip_invalid = skip_invalid
        self.tally = Tally()
        self.operator = operator
        self.executor = import_executor(platform)

    def context(self, service: str) -> CommandContext:
        batch = UUID(self.batch_id)
        return CommandContext(
            actor=self.operator, service=service, correlation_id=batch, causation_id=batch
        )

    def commit_batch(
        self,
        conn: Connection,
        batch: Sequence[Parsed],
        context: KindContext,
        last_line: int,
        unreadable: int,
        decided: Sequence[Verdict] | None = None,
    ) -> list[Verdict]:
        """Decide (unless ``decided`` by the validating pass) and append one batch, and
        advance the run: one unit of work."""
        if decided is not None:
            verdicts = list(decided)
        else:
            verdicts = self.kind.decide(conn, batch, context) if batch else []
        failed = [v for v in verdicts if v.problems]
        if failed and not self.skip_invalid:
            first = failed[0].problems[0]
            raise Interrupted(
                f"line {first.line}, {first.field}: {first.problem} (valid when checked: "
                "was the same data changed meanwhile?)"
            )
        try:
            self.append(conn, verdicts)
        except ConcurrencyError as exc:  # decided on streams another writer changed since
            raise Interrupted(f"{exc} (was the same data changed meanwhile?)") from None
        done = [v for v in verdicts if not v.problems]
        counts = runs.Counts(
            imported=sum(1 for v in done if not v.present),
            present=sum(1 for v in done if v.present),
            invalid=len(failed) + unreadable,
            events=sum(v.events for v in done),
        )
        runs.advance(conn, self.batch_id, last_line, counts, self.platform.clock.now())
        return verdicts

    def append(self, conn: Connection, verdicts: Sequence[Verdict]) -> None:
        groups = [
            (
                self.context(service),
                [StreamAppend(sid, p.events, p.head, p.region) for sid, p in streams.items()],
            )
            for by_service in rounds([v for v in verdicts if not v.problems])
            for service, streams in by_service.items()
        ]
        if groups:
            self.executor.commit_in_turn(conn, groups)


__all__ = ["Committer", "Interrupted", "Segment", "import_executor"]

"""A projection's progress judged in ledger positions, whatever the broker says.

A projection fed from Kafka cannot trust the broker's offsets: a broker that comes back
without its log (a rebuilt topic, an unclean leader election, the test broker restarted)
leaves consumer groups with committed offsets past the new log's end, so the messages
written after it land at lower offsets and are never delivered, while the broker's own
lag reads 0. The ledger is the source of truth, so progress is measured against it:

- **Applied position**: the largest ledger position P such that every event of the
  projection's stream types up to P has been applied (its stream's applied version is at
  least the event's), or waits behind a parked event of its stream. It is the
  projection's checkpoint; lag is the ledger head (of its stream types) minus it.
- **Fill**: an event the broker has not delivered within ``grace_seconds`` of being in
  the ledger is read from the ledger and applied by the projector itself; the broker's
  copy, when it comes, is a duplicate (skipped by stream version).

``LedgerGuard.check`` does both, every ``check_seconds``, for one projection.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Connection, func, select

from shared.eventstore.applied import is_done, raise_checkpoint, read_checkpoint, stream_versions
from shared.eventstore.db import Database
from shared.eventstore.ledger import EVENT_COLUMNS, EventStore, row_to_envelope
from shared.eventstore.projection import Projection
from shared.eventstore.tables import events
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope


def relevant_head(conn: Connection, stream_types: Sequence[str]) -> int:
    """The position of the newest event of these stream types (0 when none)."""
    return int(
        conn.execute(
            select(func.coalesce(func.max(events.c.position), 0)).where(
                events.c.stream_type.in_(list(stream_types))
            )
        ).scalar_one()
    )


def projection_lag(conn: Connection, name: str, stream_types: Iterable[str]) -> tuple[int, int]:
    """(applied position, lag). The head counts only events the projection reads, so
    events of other stream types never show as lag."""
    newest = relevant_head(conn, list(stream_types))
    done = read_checkpoint(conn, name)
    return done, max(0, newest - done)


def applied_position(
    conn: Connection, projection: Projection, after: int, *, page: int = 2000, pages: int = 10
) -> tuple[int, int | None]:
    """(applied position, position of the first event of the projection's stream types
    not yet applied — None when there is none). Reads at most ``pages`` pages after
    ``after``: a projection far behind advances over several calls."""
    name, types = projection.name, list(projection.stream_types)
    position = after
    for _ in range(pages):
        rows = conn.execute(
            select(events.c.position, events.c.stream_id, events.c.stream_version)
            .where(events.c.position > position, events.c.stream_type.in_(types))
            .order_by(events.c.position)
            .limit(page)
        ).all()
        if not rows:
            return position, None
        applied = stream_versions(conn, name, {r.stream_id for r in rows})
        for row in rows:
            if not is_done(applied, row.stream_id, row.stream_version):
                return position, row.position
            position = row.position
        if len(rows) < page:
            return position, None
    return position, position + 1


class LedgerGuard:
    """Keeps one projection's applied position and fills what the broker did not deliver.

    ``urgent`` (set by the source when it finds the broker's log truncated) fills at once,
    without waiting for ``grace_seconds``; it clears once nothing is missing."""

    def __init__(
        self,
        db: Database,
        store: EventStore,
        *,
        clock: Clock | None = None,
        check_seconds: float = 1.0,
        grace_seconds: float = 10.0,
        batch_size: int = 500,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock or SystemClock()
        self.check_seconds = check_seconds
        self.grace_seconds = grace_seconds
        self.batch_size = batch_size
        self.monotonic = monotonic
        self.urgent = False
        self.applied = 0
        self.missing: int | None = None
        # True while an event has been in the ledger longer than ``grace_seconds`` without
        # coming through the broker.
        self.overdue = False
        self._next_check = 0.0
        # (when, ledger head then): an event at or below a head seen ``grace_seconds``
        # ago has had that long to come through the broker.
        self._heads: deque[tuple[float, int]] = deque()

    def due(self) -> bool:
        return self.monotonic() >= self._next_check

    def _overdue_up_to(self, now: float, head: int) -> int:
        """The highest position the broker has had ``grace_seconds`` to deliver."""
        self._heads.append((now, head))
        limit = 0
        while self._heads and self._heads[0][0] <= now - self.grace_seconds:
            limit = self._heads.popleft()[1]
        if limit:
            self._heads.appendleft((now - self.grace_seconds, limit))
        return head if self.urgent else limit

    async def check(self, projection: Projection) -> list[EventEnvelope]:
        """Move the applied position on; return the ledger events to apply now (those
        overdue from the broker), at most ``batch_size``."""
        now = self.monotonic()
        self._next_check = now + self.check_seconds
        name = projection.name

        def measure(conn: Connection) -> tuple[int, int, int, int | None]:
            head = self.store.last_position(conn)
            stored = read_checkpoint(conn, name)
            applied, missing = applied_position(conn, projection, stored)
            return head, stored, applied, missing

        head, stored, self.applied, self.missing = await self.db.read(measure)
        if self.applied > stored:
            at = self.clock.now()
            await self.db.write(lambda c: raise_checkpoint(c, name, self.applied, at))
        if self.missing is None:
            self.urgent = self.overdue = False
            self._heads.clear()
            return []
        limit = self._overdue_up_to(now, head)
        self.overdue = self.missing <= limit
        if not self.overdue:
            return []
        return await self.db.read(lambda c: self._ledger_page(c, projection, limit))

    def _ledger_page(
        self, conn: Connection, projection: Projection, up_to: int
    ) -> list[EventEnvelope]:
        """The projection's events after its applied position, up to ``up_to``."""
        query = (
            select(*(events.c[c] for c in EVENT_COLUMNS))
            .where(
                events.c.position > self.applied,
                events.c.position <= up_to,
                events.c.stream_type.in_(list(projection.stream_types)),
            )
            .order_by(events.c.position)
            .limit(self.batch_size)
        )
        return [row_to_envelope(r) for r in conn.execute(query)]

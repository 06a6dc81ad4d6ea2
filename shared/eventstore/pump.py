"""Many projections fed from the ledger by one reader: one read and one write per page.

A projector process keeps a dozen read models and reactors up to date. Run one by one,
each would read the same pages and commit its own transaction for them; here every page
is read once and applied to every projection still behind it, in one transaction. Each
projection keeps its own checkpoint and applies inside its own savepoint, so one that
fails (or whose reactor lost a race) is rolled back alone and tried again on the next
round from its own checkpoint, while the others move on. One that keeps failing on the
same page (``runner.retries`` rounds) applies that page one event at a time, parking the
events that still fail (poison events, see ``runner.py``), and moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Connection

from shared.eventstore.db import is_outage, lost_a_race, savepoint
from shared.eventstore.metrics import PROJECTION_APPLIED, PROJECTION_DUPLICATES
from shared.eventstore.projection import Projection, fields_of, upsert_rows
from shared.eventstore.runner import ProjectionRunner, RunStats, read_checkpoint
from shared.eventstore.tables import projection_checkpoints
from shared.kernel.events.envelope import EventEnvelope

log = logging.getLogger(__name__)


@dataclass
class _Round:
    """What one page did: the projections it moved on, and those that failed."""

    moved: dict[str, RunStats] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)


class LedgerPump:
    def __init__(
        self,
        runner: ProjectionRunner,
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.2,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.runner = runner
        self.projections = list(projections)
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.stop = stop or asyncio.Event()
        self.checkpoints: dict[str, int] = {}
        # Per projection failing on a page: (its checkpoint then, rounds failed there).
        self.failures: dict[str, tuple[int, int]] = {}

    async def catch_up(self) -> None:
        """Apply everything the ledger holds beyond the checkpoints, then return."""
        db, store = self.runner.db, self.runner.store
        names = [p.name for p in self.projections]
        fields = fields_of(self.projections)
        self.checkpoints = await db.read(lambda c: {n: read_checkpoint(c, n) for n in names})
        while not self.stop.is_set():
            after = min(self.checkpoints.values(), default=0)
            page = await db.read(
                partial(store.read_all, after_position=after, limit=self.batch_size, fields=fields)
            )
            if not page:
                return
            outcome = await db.write(partial(self._apply_page, page=page))
            for name, stats in outcome.moved.items():
                self.checkpoints[name] = page[-1].position
                PROJECTION_APPLIED.labels(name).inc(stats.applied)
                PROJECTION_DUPLICATES.labels(name).inc(stats.duplicates)
            for name, error in outcome.failed.items():
                log.warning("projection %s failed at %d: %s", name, page[0].position, error)
            if await self._park_poison(outcome, page) < len(outcome.failed):
                return  # the failed ones stay behind; the next round starts from them

    async def _park_poison(self, outcome: _Round, page: list[EventEnvelope]) -> int:
        """Projections that failed on this page ``retries`` rounds running apply it one
        event at a time (parking what keeps failing) and move on. Returns how many did."""
        for name in outcome.moved:
            self.failures.pop(name, None)
        moved_on = 0
        for name, error in outcome.failed.items():
            at = self.checkpoints.get(name, 0)
            since, rounds = self.failures.get(name, (at, 0))
            if since != at:
                rounds = 0
            if not is_outage(error):  # an outage says nothing about the events
                rounds += 1
            self.failures[name] = (at, rounds)
            if rounds < self.runner.retries:
                continue
            projection = next(p for p in self.projections if p.name == name)
            wanted = projection.stream_types
            events = [e for e in page if e.position > at and e.stream_type in wanted]
            await self.runner.isolate(projection, events)
            last = page[-1].position
            await self.runner.db.write(
                partial(self.runner.save_checkpoint, name=name, position=last)
            )
            self.checkpoints[name] = last
            self.failures.pop(name, None)
            moved_on += 1
        return moved_on

    async def run(self) -> None:
        """Keep up until ``stop``: catch up, then poll."""
        while not self.stop.is_set():
            await self.catch_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.poll_seconds)

    def _apply_page(self, conn: Connection, page: list[EventEnvelope]) -> _Round:
        outcome = _Round()
        last = page[-1].position
        # Every stream lock the page needs, at once and in one order (PostgreSQL).
        self.runner.lock_all(
            conn,
            [
                (p.name, e.stream_id)
                for p in self.projections
                for e in page
                if e.stream_type in p.stream_types and e.position > self.checkpoints.get(p.name, 0)
            ],
        )
        for projection in self.projections:
            done = self.checkpoints.get(projection.name, 0)
            if done >= last:
                continue
            wanted = projection.stream_types
            events = [e for e in page if e.position > done and e.stream_type in wanted]
            stats = RunStats()
            if events:
                try:
                    with savepoint(conn):
                        self.runner.apply_batch(conn, projection, events, stats)
                except Exception as exc:  # rolled back to the savepoint: this one only
                    if lost_a_race(exc):
                        raise  # the page runs again, with the locks it gave way on first
                    outcome.failed[projection.name] = exc
                    continue
            outcome.moved[projection.name] = stats
        # Every checkpoint that moved, in one statement; rows in name order, as every
        # other pump writes them (another process's pump never waits on these in a cycle).
        now = self.runner.clock.now()
        upsert_rows(
            conn,
            projection_checkpoints,
            [{"projection": n, "position": last, "updated_at": now} for n in sorted(outcome.moved)],
        )
        return outcome

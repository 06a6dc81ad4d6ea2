"""Scratch files of one import, so that its memory stays flat whatever the file's size.

- ``Spool``: what the validating pass decided, batch by batch: the writing pass of an
  all-or-nothing import appends it instead of reading, parsing and deciding the file again.
- ``Remembered``: what a kind's later rows build on across batches of a validating pass
  (nothing of the file is in the database yet), e.g. the repairs earlier rows recorded.
"""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

from shared.app.importing.fields import Problem
from shared.app.importing.kinds import Segment, Verdict
from shared.eventstore.ledger import StreamHead
from shared.kernel.events.envelope import DumpedPayload, EventPayload, PendingEvent
from shared.kernel.events.registry import payload_class

# A decided batch as spooled: rows read, its last line, its verdicts.
Decided = tuple[int, int, list[Verdict]]
# A verdict as spooled: plain tuples, each payload its event type and JSON body (pickling
# models, or loading them back from JSON with validation, cost about as much as deciding
# the rows again).
_Event = tuple[str, dict[str, Any], datetime | None]
_Segment = tuple[str, str, str | None, StreamHead | None, tuple[_Event, ...]]
_Flat = tuple[int, bool, tuple[Problem, ...], tuple[_Segment, ...]]


class Spool:
    def __init__(self) -> None:
        # Closed by close() (the import's finally), like KeyIndex.
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="ticketline-import-spool-")  # noqa: SIM115
        self.batches = 0

    def put(self, rows: int, last_line: int, verdicts: list[Verdict]) -> None:
        flat = [_flat(v) for v in verdicts]
        pickle.dump((rows, last_line, flat), self._file, pickle.HIGHEST_PROTOCOL)
        self.batches += 1

    def read(self) -> Iterator[Decided]:
        """The batches in the order put, one at a time."""
        self._file.seek(0)
        for _ in range(self.batches):
            rows, last_line, flat = pickle.load(self._file)
            yield rows, last_line, [_verdict(v) for v in flat]

    def close(self) -> None:
        self._file.close()


def _flat(verdict: Verdict) -> _Flat:
    segments = tuple(
        (
            s.service,
            s.stream_id,
            s.region,
            s.head,
            tuple(
                (e.payload.event_type, e.payload.model_dump(mode="json"), e.occurred_at)
                for e in s.events
            ),
        )
        for s in verdict.segments
    )
    return verdict.line, verdict.present, verdict.problems, segments


def _verdict(flat: _Flat) -> Verdict:
    """The spooled verdict, its payloads ``DumpedPayload``s (what an append needs)."""
    line, present, problems, segments = flat
    return Verdict(
        line,
        tuple(
            Segment(
                service,
                stream_id,
                tuple(
                    PendingEvent(cast(EventPayload, DumpedPayload(payload_class(t), body)), at)
                    for t, body, at in events
                ),
                region,
                head,
            )
            for service, stream_id, region, head, events in segments
        ),
        present,
        problems,
    )


class Remembered:
    """Values by (area, key), several per key, in a scratch SQLite file."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ticketline-import-memory-")
        # Used by the decisions, on the database's threads: one batch at a time.
        path = Path(self._dir.name) / "memory.db"
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
            "CREATE TABLE memory (area TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL);"
            "CREATE INDEX memory_key ON memory (area, key);"
        )
        self._pending: list[tuple[str, str, bytes]] = []

    def add(self, area: str, key: str, value: Any) -> None:
        # Written with the next find (one executemany a batch, not a statement a row).
        self._pending.append((area, key, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)))

    def find(self, area: str, keys: Iterable[str]) -> dict[str, list[Any]]:
        """Every value of these keys, in the order added."""
        if self._pending:
            self._db.executemany("INSERT INTO memory VALUES (?, ?, ?)", self._pending)
            self._pending.clear()
        found: dict[str, list[Any]] = {}
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT key, value FROM memory WHERE area = ? AND key IN ({marks}) ORDER BY rowid"
            )
            for key, blob in self._db.execute(query, (area, *chunk)):
                found.setdefault(key, []).append(pickle.loads(blob))
        return found

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

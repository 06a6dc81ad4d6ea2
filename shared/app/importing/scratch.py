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
from pathlib import Path
from typing import IO, Any

from shared.app.importing.kinds import Verdict

# A decided batch as spooled: rows read, its last line, its verdicts.
Decided = tuple[int, int, list[Verdict]]


class Spool:
    def __init__(self) -> None:
        # Closed by close() (the import's finally), like KeyIndex.
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="ticketline-import-spool-")  # noqa: SIM115
        self.batches = 0

    def put(self, rows: int, last_line: int, verdicts: list[Verdict]) -> None:
        # Plain pickle: faster both ways than the payloads' JSON (which loads with validation).
        pickle.dump((rows, last_line, verdicts), self._file, pickle.HIGHEST_PROTOCOL)
        self.batches += 1

    def read(self) -> Iterator[Decided]:
        """The batches in the order put, one at a time."""
        self._file.seek(0)
        for _ in range(self.batches):
            found: Decided = pickle.load(self._file)
            yield found

    def close(self) -> None:
        self._file.close()


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

    def add(self, area: str, key: str, value: Any) -> None:
        blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        self._db.execute("INSERT INTO memory VALUES (?, ?, ?)", (area, key, blob))

    def find(self, area: str, keys: Iterable[str]) -> dict[str, list[Any]]:
        """Every value of these keys, in the order added."""
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

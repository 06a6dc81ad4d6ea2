"""The natural keys one file has used so far, to report a key given twice in a file.

Kept in a scratch SQLite file, not in memory: a 2 GB history has millions of keys.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path


class KeyIndex:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ticketline-import-keys-")
        self._db = sqlite3.connect(Path(self._dir.name) / "keys.db")
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
            "CREATE TABLE keys (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;"
        )

    def duplicates(self, keyed: Sequence[tuple[str, int]]) -> dict[int, int]:
        """Record a batch's (key, line) pairs; returns line → the earlier line of the same
        key (in this batch or before) for every key seen before."""
        earlier: dict[str, int] = {}
        for start in range(0, len(keyed), 500):
            chunk = sorted({k for k, _ in keyed[start : start + 500]})
            marks = ",".join("?" * len(chunk))
            earlier.update(
                self._db.execute(f"SELECT key, line FROM keys WHERE key IN ({marks})", chunk)
            )
        found: dict[int, int] = {}
        new: list[tuple[str, int]] = []
        for key, line in keyed:
            if key in earlier:
                found[line] = earlier[key]
                continue
            earlier[key] = line
            new.append((key, line))
        self._db.executemany("INSERT INTO keys (key, line) VALUES (?, ?)", new)
        return found

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

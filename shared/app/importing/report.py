"""The error report (CSV: line, field, problem) and the counts of an import."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared.app.files import new_sibling, said_of
from shared.app.importing.cells import spreadsheet_text
from shared.app.importing.fields import Problem

REPORT_COLUMNS = ("line", "field", "problem")


@dataclass
class Tally:
    rows: int = 0  # records read (of the lines after a resumed run's last committed one)
    imported: int = 0
    present: int = 0  # already in the ledger (natural key): skipped
    invalid: int = 0
    events: int = 0


class ProblemSink:
    """Problems as they come: counted, the first ``keep`` kept for a response, every one
    written to ``path`` as CSV (flat memory however many) — built in a file of its own
    (owner-only) and placed at ``path`` only when there is something to report, so
    nothing is written through a link planted there. A report that cannot be written (a
    full disk) does not stop the import: ``write_error`` says why it is missing."""

    def __init__(self, path: Path | None = None, keep: int = 1000) -> None:
        self.path = path
        self.keep = keep
        self.count = 0
        self.first: list[Problem] = []
        self.write_error: str | None = None
        self._file: IO[str] | None = None
        self._writer: csv._writer | None = None  # type: ignore[name-defined]
        self._draft: Path | None = None
        if path is not None:
            self._guarded(self._open, path)

    def _open(self, path: Path) -> None:
        self._draft = new_sibling(path)
        self._file = self._draft.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(REPORT_COLUMNS)

    def _guarded(self, write: Callable[..., None], *args: Any) -> None:
        if self.write_error is None:
            try:
                write(*args)
            except OSError as exc:
                self.write_error = str(exc)

    def add(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.count += 1
            if len(self.first) < self.keep:
                self.first.append(problem)
            if self._writer is not None:
                # Field names come from the file (a JSON key): a spreadsheet opens the report.
                field, said = spreadsheet_text(problem.field), spreadsheet_text(problem.problem)
                self._guarded(self._writer.writerow, (problem.line, field, said))

    def close(self) -> None:
        """The report at ``path`` when there were problems; else none there (the report of
        a run before, for a file since made valid, is removed — no other file)."""
        if self._file is not None:
            self._guarded(self._file.close)
            self._file = None
        draft, self._draft = self._draft, None
        if draft is None or self.path is None:
            return
        if self.count and self.write_error is None:
            with said_of(self.path):
                os.replace(draft, self.path)
            return
        draft.unlink(missing_ok=True)
        if _is_report(self.path):  # an earlier run's: not this one's (none, or unwritable)
            self.path.unlink()

    def as_dicts(self) -> list[dict[str, object]]:
        return [{"line": p.line, "field": p.field, "problem": p.problem} for p in self.first]


def _is_report(path: Path) -> bool:
    """A regular file whose first line is a report's header (one an earlier run wrote)."""
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.readline().rstrip(b"\r\n") == ",".join(REPORT_COLUMNS).encode()

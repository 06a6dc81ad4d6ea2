"""The error report (CSV: line, field, problem) and the counts of an import."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.app.files import new_sibling
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
    written to ``path`` as CSV (flat memory however many)."""

    def __init__(self, path: Path | None = None, keep: int = 1000) -> None:
        self.path = path
        self.keep = keep
        self.count = 0
        self.first: list[Problem] = []
        self._file: IO[str] | None = None
        self._writer: csv._writer | None = None  # type: ignore[name-defined]
        self._draft: Path | None = None
        if path is not None:
            # Built in a file of its own (owner-only), placed at ``path`` only when there
            # is something to report: never written through a link planted there.
            self._draft = new_sibling(path)
            self._file = self._draft.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(REPORT_COLUMNS)

    def add(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.count += 1
            if len(self.first) < self.keep:
                self.first.append(problem)
            if self._writer is not None:
                # Field names come from the file (a JSON key): a spreadsheet opens the report.
                self._writer.writerow(
                    (
                        problem.line,
                        spreadsheet_text(problem.field),
                        spreadsheet_text(problem.problem),
                    )
                )

    def close(self) -> None:
        """The report at ``path`` when there were problems; else none there (a report a
        run before left, for a file since made valid, is removed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._draft is None or self.path is None:
            return
        if self.count:
            os.replace(self._draft, self.path)
        else:
            self._draft.unlink(missing_ok=True)
            if self.path.is_file() and not self.path.is_symlink():
                self.path.unlink()
        self._draft = None

    def as_dicts(self) -> list[dict[str, object]]:
        return [{"line": p.line, "field": p.field, "problem": p.problem} for p in self.first]

"""The bench's table: each Ticketline figure beside the limit measured in the same run.

    report = Report(settings={"quick": True})
    sqlite = report.section("SQLite (embedded)")
    sqlite.compare("append, one stream", ticketline_result, limit_result, unit="events/s",
                   note="limit: bare sqlite3, one INSERT per transaction, thread hop")
    sqlite.compare("append p99", ticketline_result, limit_result, metric="p99")
    print(report.render()); report.write_json("bench.json")

A row's ratio is value / reference: for rates, the share of the limit Ticketline reaches
(1.0 = at the limit); for latencies, how many times slower than the limit it is. A
section may name its two columns otherwise (the list-latency section compares a large
table with a small one).
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.measure import Result

Metric = Literal["rate", "p50", "p95", "p99"]
_MISSING = "—"


def _number(x: float | None) -> str:
    if x is None:
        return _MISSING
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _metric(result: Result | None, metric: Metric) -> float | None:
    if result is None:
        return None
    if metric == "rate":
        return result.rate if result.count else None
    value = result.latency(float(metric[1:]))
    return None if value is None else value * 1000


@dataclass
class Row:
    figure: str
    value: float | None
    reference: float | None
    unit: str = ""
    note: str = ""
    value_result: dict[str, Any] | None = None
    reference_result: dict[str, Any] | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.reference:
            return None
        return self.value / self.reference

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Section:
    title: str
    value_header: str = "Ticketline"
    reference_header: str = "limit"
    rows: list[Row] = field(default_factory=list)

    def add(
        self,
        figure: str,
        value: float | None,
        reference: float | None,
        *,
        unit: str = "",
        note: str = "",
    ) -> Row:
        """A row from plain numbers."""
        row = Row(figure, value, reference, unit, note)
        self.rows.append(row)
        return row

    def compare(
        self,
        figure: str,
        value: Result | None,
        reference: Result | None,
        *,
        metric: Metric = "rate",
        unit: str | None = None,
        note: str = "",
    ) -> Row:
        """A row from two measured runs: their rate (``unit`` e.g. ``"events/s"``) or a
        latency percentile (``metric="p99"``, in ms). Either side may be None (not
        measured); the full summaries go into the JSON dump."""
        row = Row(
            figure,
            _metric(value, metric),
            _metric(reference, metric),
            unit if unit is not None else ("/s" if metric == "rate" else f"ms {metric}"),
            note,
            value.summary() if value is not None else None,
            reference.summary() if reference is not None else None,
        )
        self.rows.append(row)
        return row

    def limit_only(self, figure: str, limit: Result, *, unit: str = "/s", note: str = "") -> Row:
        """A limit with no Ticketline figure beside it (yet); its latencies go in the note."""
        s = limit.summary()
        if s["p50_ms"] is not None:
            latency = f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms"
            note = f"{latency}; {note}" if note else latency
        return self.compare(figure, None, limit, unit=unit, note=note)

    def failed(self, figure: str, error: BaseException | str) -> Row:
        return self.add(figure, None, None, note=f"FAILED: {error}")


def _load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def filesystem_of(path: str | Path) -> str:
    """The file system type holding ``path`` (Linux /proc/mounts), e.g. ``ext4``, ``tmpfs``."""
    target = str(Path(path).resolve())
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, parts[2]
    return kind


@dataclass
class Machine:
    cores: int | None = field(default_factory=os.cpu_count)
    load_start: tuple[float, float, float] | None = field(default_factory=_load)
    load_end: tuple[float, float, float] | None = None
    python: str = field(default_factory=platform.python_version)
    sqlite: str = sqlite3.sqlite_version
    postgresql: str | None = None
    temp_filesystem: str = field(default_factory=lambda: filesystem_of(tempfile.gettempdir()))
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    seconds: float | None = None

    def finish(self, seconds: float | None = None) -> None:
        self.load_end = _load()
        self.seconds = seconds

    def line(self) -> str:
        def load(value: tuple[float, float, float] | None) -> str:
            return "/".join(f"{x:.2f}" for x in value) if value else "?"

        parts = [
            f"{self.cores} cores",
            f"load (1/5/15 min) {load(self.load_start)} at start, {load(self.load_end)} at end",
            f"Python {self.python}",
            f"SQLite {self.sqlite}",
            f"PostgreSQL {self.postgresql or 'not measured'}",
            f"temp dir on {self.temp_filesystem}",
        ]
        if self.seconds is not None:
            parts.append(f"run {self.seconds:.0f} s")
        return "machine: " + ", ".join(parts)


class Report:
    def __init__(self, title: str = "Ticketline bench", settings: dict[str, Any] | None = None):
        self.title = title
        self.settings = settings or {}
        self.machine = Machine()
        self.sections: list[Section] = []

    def section(
        self, title: str, *, value_header: str = "Ticketline", reference_header: str = "limit"
    ) -> Section:
        section = Section(title, value_header, reference_header)
        self.sections.append(section)
        return section

    def render(self) -> str:
        lines = [f"{self.title} ({self.started_line()})", self.machine.line()]
        if self.settings:
            lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        for section in self.sections:
            lines.append("")
            lines.extend(_render_section(section))
        lines.append("")
        lines.append(
            "ratio = value / reference: for rates the share of the limit reached, for "
            "latencies how many times the limit's."
        )
        return "\n".join(lines)

    def started_line(self) -> str:
        return f"started {self.machine.started_at}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "settings": self.settings,
            "machine": asdict(self.machine),
            "sections": [
                {
                    "title": s.title,
                    "value_header": s.value_header,
                    "reference_header": s.reference_header,
                    "rows": [r.as_dict() for r in s.rows],
                }
                for s in self.sections
            ],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")


def _render_section(section: Section) -> list[str]:
    header = ("figure", section.value_header, section.reference_header, "unit", "ratio", "note")
    body = [
        (
            r.figure,
            _number(r.value),
            _number(r.reference),
            r.unit,
            _MISSING if r.ratio is None else f"{r.ratio:.3g}",
            r.note,
        )
        for r in section.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(5)]
    right = (False, True, True, False, True)

    def line(cells: tuple[str, ...]) -> str:
        out = [
            cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i])
            for i, cell in enumerate(cells[:5])
        ]
        return ("  " + "  ".join(out) + ("  " + cells[5] if cells[5] else "")).rstrip()

    return [f"{section.title}", line(header), *(line(cells) for cells in body)]

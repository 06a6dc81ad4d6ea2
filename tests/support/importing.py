"""Running imports in tests: in process, on the test's platform (its clock, its database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.app.importing.engine import ImportRequest, ImportSummary, run_import
from shared.app.importing.report import ProblemSink
from shared.app.platform import Platform
from shared.kernel.events.envelope import Actor

OPERATOR = Actor(subject="ops-alice", role="admin")


async def import_file(
    platform: Platform, kind: str, path: Path, **options: Any
) -> tuple[ImportSummary, ProblemSink]:
    sink = ProblemSink()
    request = ImportRequest(kind=kind, path=path, operator=OPERATOR, **options)
    summary = await run_import(platform, request, sink)
    return summary, sink


async def import_all(
    platform: Platform, files: dict[str, Path], **options: Any
) -> dict[str, ImportSummary]:
    """Every file, in the order given (the import order); each must import."""
    out: dict[str, ImportSummary] = {}
    for kind, path in files.items():
        summary, sink = await import_file(platform, kind, path, **options)
        assert summary.status == "imported", (kind, summary.as_dict(), sink.as_dicts()[:5])
        out[kind] = summary
    return out


def problems(sink: ProblemSink) -> list[tuple[int, str, str]]:
    return [(p.line, p.field, p.problem) for p in sink.first]

"""Import runs (``import_runs``): start, resume, advance in each batch's transaction, finish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from shared.eventstore.tables import import_runs
from shared.kernel.events.envelope import Actor
from shared.kernel.ids import uuid7_text

RUNNING, COMPLETED = "running", "completed"


@dataclass(frozen=True)
class Run:
    batch_id: str
    committed_line: int = 0
    resumed: bool = False


@dataclass(frozen=True)
class Counts:
    imported: int = 0
    present: int = 0
    invalid: int = 0
    events: int = 0


def resumable(conn: Connection, kind: str, fingerprint: str) -> Run | None:
    """The same file's run that did not finish (interrupted, or still running elsewhere)."""
    r = import_runs.c
    row = conn.execute(
        select(r.batch_id, r.committed_line)
        .where(r.kind == kind, r.fingerprint == fingerprint, r.status == RUNNING)
        .order_by(r.started_at.desc())
        .limit(1)
    ).first()
    return Run(row.batch_id, row.committed_line, resumed=True) if row else None


def start(
    conn: Connection,
    *,
    kind: str,
    source: str,
    fingerprint: str,
    operator: Actor,
    mode: str,
    now: datetime,
) -> Run:
    batch_id = uuid7_text()
    values: dict[str, Any] = {
        "batch_id": batch_id,
        "kind": kind,
        "source": source[:300],
        "fingerprint": fingerprint,
        "operator": operator.subject,
        "operator_role": operator.role,
        "mode": mode,
        "status": RUNNING,
        "committed_line": 0,
        "rows_imported": 0,
        "rows_present": 0,
        "rows_invalid": 0,
        "events": 0,
        "started_at": now,
        "updated_at": now,
        "finished_at": None,
    }
    conn.execute(insert(import_runs).values(**values))
    return Run(batch_id)


def advance(conn: Connection, batch_id: str, line: int, counts: Counts, now: datetime) -> None:
    """In the transaction of the batch's events: how far the import got."""
    r = import_runs.c
    conn.execute(
        update(import_runs)
        .where(r.batch_id == batch_id)
        .values(
            committed_line=line,
            rows_imported=r.rows_imported + counts.imported,
            rows_present=r.rows_present + counts.present,
            rows_invalid=r.rows_invalid + counts.invalid,
            events=r.events + counts.events,
            updated_at=now,
        )
    )


def finish(conn: Connection, batch_id: str, now: datetime) -> None:
    r = import_runs.c
    conn.execute(
        update(import_runs)
        .where(r.batch_id == batch_id)
        .values(status=COMPLETED, finished_at=now, updated_at=now)
    )


def get_run(conn: Connection, batch_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(import_runs).where(import_runs.c.batch_id == batch_id)).first()
    return dict(row._mapping) if row else None

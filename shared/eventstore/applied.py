"""What a projection has applied, in its own tables, inside its own transactions.

- Per stream, the last version applied (``projection_stream_versions``): duplicates are
  skipped, a later version arriving first pulls the missing ones from the ledger.
- Per stream, a parked version: the stream has an event the projection could not apply
  (a poison event, ``parked_events``); its later events wait until the event is retried
  or skipped (``ticketline parked retry|skip``), so a stream is never applied out of
  order. Read with the versions, so a batch pays nothing for it.
- The checkpoint (``projection_checkpoints``): the ledger position up to which everything
  of the projection's stream types is applied (or parked) — what lag is measured from.

Every function is a step of a unit of work (a plain function of a ``Connection``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.util import await_only

from shared.eventstore.driver import asyncpg_driver, pg_array_of, sqlite_driver
from shared.eventstore.projection import upsert_rows
from shared.eventstore.tables import (
    parked_events,
    projection_checkpoints,
    projection_stream_versions,
)
from shared.kernel.events.envelope import EventEnvelope

PARKED = "parked"
RETRIED = "retried"
SKIPPED = "skipped"
ERROR_MAX_CHARS = 4000


@dataclass(frozen=True)
class Applied:
    """Per stream: the last version applied, and the version parked (blocking the rest)."""

    versions: dict[str, int]
    parked: dict[str, int]


def stream_versions(conn: Connection, name: str, stream_ids: Iterable[str]) -> Applied:
    """Versions applied and parked versions: one SELECT in all on PostgreSQL, one per 500
    streams elsewhere."""
    ids = sorted(set(stream_ids))
    versions: dict[str, int] = {}
    parked: dict[str, int] = {}
    for stream_id, version, parked_version in _version_rows(conn, name, ids):
        versions[stream_id] = version
        if parked_version is not None:
            parked[stream_id] = parked_version
    return Applied(versions, parked)


def _version_rows(conn: Connection, name: str, ids: list[str]) -> Iterable[Sequence[Any]]:
    psv = projection_stream_versions
    pg = asyncpg_driver(conn)
    if pg is not None:
        sql = (
            "SELECT v.stream_id, v.version, v.parked_version FROM projection_stream_versions v "
            f"JOIN unnest($2::{pg_array_of(psv.c.stream_id)}) AS k(key) ON v.stream_id = k.key "
            "WHERE v.projection = $1"
        )
        yield from await_only(pg.fetch(sql, name, ids))
        return
    columns = psv.c.stream_id, psv.c.version, psv.c.parked_version
    raw = sqlite_driver(conn)
    for start in range(0, len(ids), 500):  # keep IN lists within driver limits
        chunk = ids[start : start + 500]
        if raw is not None:
            yield from raw.execute(
                "SELECT stream_id, version, parked_version FROM projection_stream_versions "
                f"WHERE projection = ? AND stream_id IN ({', '.join('?' * len(chunk))})",
                [name, *chunk],
            )
        else:
            yield from conn.execute(
                select(*columns).where(psv.c.projection == name, psv.c.stream_id.in_(chunk))
            )


def store_versions(
    conn: Connection, name: str, known: dict[str, int], versions: dict[str, int]
) -> None:
    """Write the versions that changed (of streams not parked: those are left alone)."""
    rows = [
        {"projection": name, "stream_id": sid, "version": v, "parked_version": None}
        for sid, v in versions.items()
        if known.get(sid) != v
    ]
    upsert_rows(conn, projection_stream_versions, rows)


def is_done(applied: Applied, stream_id: str, version: int) -> bool:
    """Applied, or waiting behind a parked event of its stream (counted as handled: the
    projection moved on; the parked count says what waits)."""
    if version <= applied.versions.get(stream_id, 0):
        return True
    parked = applied.parked.get(stream_id)
    return parked is not None and version >= parked


# --- checkpoints --------------------------------------------------------------------------


def read_checkpoint(conn: Connection, name: str) -> int:
    value = conn.execute(
        select(projection_checkpoints.c.position).where(projection_checkpoints.c.projection == name)
    ).scalar()
    return int(value or 0)


def _dialect_insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# Raise an existing checkpoint unless another transaction holds its row: that one is
# raising it too, and this one's turn comes at its next check.
_RAISE_UNLESS_BUSY = text(
    "UPDATE projection_checkpoints SET position = :position, updated_at = :now "
    "WHERE projection = (SELECT projection FROM projection_checkpoints "
    "WHERE projection = :name FOR UPDATE SKIP LOCKED) AND position < :position"
)


def raise_checkpoint(conn: Connection, name: str, position: int, now: datetime) -> None:
    """Upsert keeping the larger position: concurrent instances neither fail on the
    first insert nor move the checkpoint back.

    On PostgreSQL an existing row that another transaction holds is left to it, without
    waiting: each instance's guard raises its projections' checkpoints in units committed
    together with others (group commit), in no particular order, and two processes
    waiting on each other's rows closed a cycle (a deadlock: a second's stall, then an
    abort and a rerun)."""
    pc = projection_checkpoints
    exists = select(pc.c.projection).where(pc.c.projection == name)
    if conn.dialect.name == "postgresql" and conn.execute(exists).first():
        conn.execute(_RAISE_UNLESS_BUSY, {"name": name, "position": position, "now": now})
        return
    statement = _dialect_insert(conn)(pc).values(projection=name, position=position, updated_at=now)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[pc.c.projection],
            set_={
                "position": case(
                    (statement.excluded.position > pc.c.position, statement.excluded.position),
                    else_=pc.c.position,
                ),
                "updated_at": statement.excluded.updated_at,
            },
        )
    )


# --- parked events ------------------------------------------------------------------------


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


def park(
    conn: Connection,
    name: str,
    event: EventEnvelope,
    error: BaseException,
    attempts: int,
    now: datetime,
) -> None:
    """Record the event as parked and block its stream in this projection."""
    pe = parked_events
    values = {
        "projection": name,
        "event_id": str(event.event_id),
        "position": event.position,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "event_type": event.event_type,
        "error": describe_error(error),
        "attempts": attempts,
        "status": PARKED,
        "parked_at": now,
        "resolved_at": None,
        "resolved_by": None,
    }
    statement = _dialect_insert(conn)(pe).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[pe.c.projection, pe.c.event_id],
            set_={k: statement.excluded[k] for k in ("error", "attempts", "status", "parked_at")}
            | {"resolved_at": None, "resolved_by": None},
        )
    )
    applied = stream_versions(conn, name, [event.stream_id])
    upsert_rows(
        conn,
        projection_stream_versions,
        [
            {
                "projection": name,
                "stream_id": event.stream_id,
                "version": applied.versions.get(event.stream_id, 0),
                "parked_version": event.stream_version,
            }
        ],
    )


def unblock(conn: Connection, name: str, stream_id: str, version: int | None = None) -> None:
    """Clear the stream's parked mark (and, skipping, count ``version`` as applied)."""
    psv = projection_stream_versions
    values: dict[str, Any] = {"parked_version": None}
    if version is not None:
        values["version"] = version
    conn.execute(
        update(psv).where(psv.c.projection == name, psv.c.stream_id == stream_id).values(**values)
    )


@dataclass(frozen=True)
class ParkedEvent:
    id: int
    projection: str
    event_id: str
    position: int
    stream_id: str
    stream_version: int
    event_type: str
    error: str
    attempts: int
    status: str
    parked_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("parked_at", "resolved_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def parked_list(
    conn: Connection,
    *,
    status: str | None = PARKED,
    projection: str | None = None,
    limit: int = 200,
) -> list[ParkedEvent]:
    pe = parked_events
    query = select(pe).order_by(pe.c.id).limit(limit)
    if status is not None:
        query = query.where(pe.c.status == status)
    if projection is not None:
        query = query.where(pe.c.projection == projection)
    return [ParkedEvent(**dict(r._mapping)) for r in conn.execute(query)]


def parked_one(conn: Connection, parked_id: int) -> ParkedEvent | None:
    row = conn.execute(select(parked_events).where(parked_events.c.id == parked_id)).first()
    return ParkedEvent(**dict(row._mapping)) if row else None


def parked_counts(conn: Connection) -> dict[str, int]:
    """Open parked events per projection."""
    pe = parked_events
    rows = conn.execute(
        select(pe.c.projection, func.count()).where(pe.c.status == PARKED).group_by(pe.c.projection)
    )
    return {name: int(count) for name, count in rows}


def mark_resolved(conn: Connection, parked_id: int, status: str, by: str, now: datetime) -> None:
    conn.execute(
        update(parked_events)
        .where(parked_events.c.id == parked_id)
        .values(status=status, resolved_at=now, resolved_by=by)
    )


def note_failed_retry(conn: Connection, parked_id: int, error: BaseException) -> None:
    conn.execute(
        update(parked_events)
        .where(parked_events.c.id == parked_id)
        .values(error=describe_error(error), attempts=parked_events.c.attempts + 1)
    )

"""Idempotency records: a retry matches its first request by the body's fingerprint."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from shared.eventstore.db import Database
from shared.eventstore.tables import idempotency_keys
from shared.http.idempotency import (
    CommandResponse,
    _legacy_fingerprint,
    request_fingerprint,
    run_idempotent,
)
from shared.http.problems import ProblemError
from shared.kernel.clock import ManualClock


async def test_a_record_fingerprinted_the_old_way_still_replays(
    db: Database, clock: ManualClock
) -> None:
    """Records stored before the orjson fingerprint (``canonical_json``) still match their
    retries where the two JSON forms differ (here a float's exponent)."""
    body: dict[str, Any] = {"reading": 1e-7, "note": "écran"}
    assert request_fingerprint(body) != _legacy_fingerprint(body)
    calls: list[int] = []

    def command(_conn: Any) -> CommandResponse:
        calls.append(1)
        return CommandResponse(201, {"version": 1, "id": "t-1"}, "/things/t-1")

    async def run(request_body: dict[str, Any]) -> CommandResponse:
        return await run_idempotent(
            db, scope="s", key="k-1", request_body=request_body, command=command, now=clock.now()
        )

    first = await run(body)
    legacy = _legacy_fingerprint(body)
    await db.write(lambda c: c.execute(update(idempotency_keys).values(request_hash=legacy)))
    again = await run(body)
    assert again.replayed and again.body == first.body and again.location == "/things/t-1"
    assert len(calls) == 1
    with pytest.raises(ProblemError) as other:
        await run({**body, "reading": 2e-7})
    assert other.value.status == 422


async def test_a_second_record_of_one_key_is_an_integrity_error(
    db: Database, clock: ManualClock
) -> None:
    """The record is written on the driver directly; its unique violation is still
    SQLAlchemy's ``IntegrityError`` (what ``run_idempotent`` settles a race by)."""
    from sqlalchemy.exc import IntegrityError

    from shared.http.idempotency import _RECORD

    def record(conn: Any) -> None:
        _RECORD.execute(conn, "s", "k-1", "h", 201, "{}", None, clock.now())

    await db.write(record)
    with pytest.raises(IntegrityError):
        await db.write(record)


async def test_a_key_stored_under_the_earlier_scope_is_still_answered(
    db: Database, clock: ManualClock
) -> None:
    """Keys were narrowed from the subject to its reach: a retry of a request answered
    before that upgrade gets its answer, not a second command."""
    calls: list[int] = []

    def command(_conn: Any) -> CommandResponse:
        calls.append(1)
        return CommandResponse(201, {"version": 1, "id": f"t-{len(calls)}"}, None)

    body = {"n": 1}
    before = await run_idempotent(
        db, scope="s:subject", key="k", request_body=body, command=command, now=clock.now()
    )
    after = await run_idempotent(
        db,
        scope="s:reach",
        key="k",
        request_body=body,
        command=command,
        now=clock.now(),
        earlier_scope="s:subject",
    )
    assert calls == [1] and after.replayed and after.body == before.body


async def test_another_constraint_than_the_keys_is_raised_not_retried(
    db: Database, clock: ManualClock
) -> None:
    """Only the key's own record settles a unique violation; another one (a bug) is no
    race, so it is not answered as one ("could not settle the key; retry")."""
    calls: list[int] = []

    def command(conn: Any) -> CommandResponse:
        calls.append(1)
        conn.exec_driver_sql("CREATE TEMPORARY TABLE IF NOT EXISTS twice (n INTEGER UNIQUE)")
        conn.exec_driver_sql("INSERT INTO twice VALUES (1), (1)")
        return CommandResponse(201, {})

    with pytest.raises(IntegrityError):
        await run_idempotent(
            db, scope="s", key="k-2", request_body={}, command=command, now=clock.now()
        )
    assert calls == [1]

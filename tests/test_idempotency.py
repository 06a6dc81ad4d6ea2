"""Idempotency records: a retry matches its first request by the body's fingerprint."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from shared.eventstore.db import Database
from shared.eventstore.tables import idempotency_keys
from shared.http.idempotency import CommandResponse, run_idempotent
from shared.http.problems import ProblemError
from shared.kernel.clock import ManualClock
from shared.kernel.events.envelope import canonical_json


def keyed(_conn: Any, text: str) -> str:
    """What the platform passes (``PersonalData.request_digest``), with a fixed secret."""
    return hmac.new(b"secret", text.encode(), hashlib.sha256).hexdigest()[:40]


async def run(
    db: Database,
    body: Any,
    command: Callable[[Any], CommandResponse],
    *,
    scope: str = "s",
    key: str = "k-1",
    earlier_scope: str | None = None,
) -> CommandResponse:
    now = ManualClock().now()
    return await run_idempotent(
        db,
        scope=scope,
        key=key,
        request_body=body,
        keyed=keyed,
        command=command,
        now=now,
        earlier_scope=earlier_scope,
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_record_is_fingerprinted_with_a_keyed_digest(
    db: Database, clock: ManualClock
) -> None:
    """A body holds personal data: an unkeyed hash of it in the table would give a guessed
    phone number away. A retry with the same body replays; another body is 422."""
    body = {"customer": {"name": "Li Wei", "phone": "13812345678"}}

    async def send(request_body: dict[str, Any]) -> CommandResponse:
        return await run(db, request_body, lambda _c: CommandResponse(201, {"id": "t-1"}))

    await send(body)
    stored = await db.read(lambda c: c.execute(select(idempotency_keys.c.request_hash)).scalar())
    text = '{"customer":{"name":"Li Wei","phone":"13812345678"}}'
    assert stored == "k1." + keyed(None, text) and sha256(text) not in stored
    assert (await send(body)).replayed
    with pytest.raises(ProblemError) as other:
        await send({"customer": {"name": "Li Wei", "phone": "13812345679"}})
    assert other.value.status == 422


@pytest.mark.parametrize("form", ["orjson", "canonical_json"])
async def test_a_record_fingerprinted_the_old_way_still_replays(
    db: Database, clock: ManualClock, form: str
) -> None:
    """Records stored before keyed fingerprints hold the body's plain SHA-256 — as orjson
    wrote it, or earlier still ``canonical_json`` — and still match their retries (the two
    JSON forms differ here: a float's exponent)."""
    body: dict[str, Any] = {"reading": 1e-7, "note": "écran"}
    plain = {
        "orjson": sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()),
        "canonical_json": sha256(canonical_json(body)),
    }
    assert plain["orjson"] != plain["canonical_json"]
    calls: list[int] = []

    def command(_conn: Any) -> CommandResponse:
        calls.append(1)
        return CommandResponse(201, {"version": 1, "id": "t-1"}, "/things/t-1")

    async def send(request_body: dict[str, Any]) -> CommandResponse:
        return await run(db, request_body, command)

    first = await send(body)
    legacy = plain[form]
    await db.write(lambda c: c.execute(update(idempotency_keys).values(request_hash=legacy)))
    again = await send(body)
    assert again.replayed and again.body == first.body and again.location == "/things/t-1"
    assert len(calls) == 1
    with pytest.raises(ProblemError) as other:
        await send({**body, "reading": 2e-7})
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
    before = await run(db, body, command, scope="s:subject", key="k")
    after = await run(db, body, command, scope="s:reach", key="k", earlier_scope="s:subject")
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
        await run(db, {}, command, key="k-2")
    assert calls == [1]


async def test_the_key_and_if_match_are_read_as_headers_are(intake: httpx.AsyncClient) -> None:
    """Spaces around a header's value are not part of it (a retry that trims them replays);
    a header given twice, or an If-Match of another form than the published one, is a 422
    naming it — which copy or which reading counts would be a guess."""
    from services.intake.schemas import RECEIVE_EXAMPLE

    first = await intake.post("/tickets", json=RECEIVE_EXAMPLE, headers={"Idempotency-Key": "kk  "})
    again = await intake.post("/tickets", json=RECEIVE_EXAMPLE, headers={"Idempotency-Key": "kk"})
    assert first.status_code == 201, first.text
    assert again.content == first.content  # the same bytes, keys in the same order
    assert again.headers["idempotent-replayed"] == "true"
    ticket = first.json()["ticket_id"]
    body = {"customer": {"name": "Li Wei", "phone": "13900009999"}, "reason": "typo"}
    twice = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    for headers, field in (
        (twice, "Idempotency-Key"),
        ([("If-Match", '"1"'), ("If-Match", '"1"')], "If-Match"),
        ([("If-Match", '" 1"')], "If-Match"),
        ([("If-Match", '"1')], "If-Match"),  # the published pattern: quotes in pairs
        ([("If-Match", '"1000000000"')], "If-Match"),  # and at most 9 digits
    ):
        refused = await intake.patch(f"/tickets/{ticket}/contact", json=body, headers=headers)
        assert refused.status_code == 422, refused.text
        assert [e["field"] for e in refused.json()["errors"]] == [field]
    history = (await intake.get(f"/tickets/{ticket}/history")).json()["events"]
    assert len(history) == 1  # nothing recorded by the refused ones

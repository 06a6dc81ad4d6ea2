"""Commands' answers are kept for their retries for ``TICKETLINE_IDEMPOTENCY_KEEP_DAYS``,
then forgotten by the jobs process: the table does not grow for ever."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import func, select

from shared.app.idempotency_expiry import BATCH, forget_expired_answers
from shared.app.platform import Platform
from shared.eventstore.tables import idempotency_keys
from shared.http.idempotency import _RECORD
from shared.kernel.clock import ManualClock
from tests.test_intake import body


async def test_an_answer_past_the_keeping_period_is_forgotten(
    platform: Platform, intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Kept for 7 days (the default): a retry within them replays; once the job has
    forgotten an answer, its retry is a new command."""
    assert platform.settings.idempotency_keep_days == 7
    old = await intake.post("/tickets", json=body(), headers={"Idempotency-Key": "old"})
    clock.advance(days=6)
    recent = await intake.post("/tickets", json=body(), headers={"Idempotency-Key": "recent"})
    clock.advance(days=1, seconds=1)
    assert await forget_expired_answers(platform) == 1
    assert await forget_expired_answers(platform) == 0  # a second pass: nothing more
    again = await intake.post("/tickets", json=body(), headers={"Idempotency-Key": "recent"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == recent.json()
    anew = await intake.post("/tickets", json=body(), headers={"Idempotency-Key": "old"})
    assert anew.status_code == 201 and anew.headers.get("Idempotent-Replayed") is None
    assert anew.json()["ticket_id"] != old.json()["ticket_id"]


async def test_a_pass_forgets_more_than_one_batch(platform: Platform, clock: ManualClock) -> None:
    """Deleted a batch per transaction (writers are not held up), until none is left."""
    made = clock.now()

    def record(conn: object) -> None:
        for n in range(BATCH + 5):
            _RECORD.execute(conn, "s", f"k-{n}", "h", 201, "{}", None, made)
        _RECORD.execute(conn, "s", "young", "h", 201, "{}", None, made + timedelta(days=2))

    await platform.db.write(record)
    clock.advance(days=8)
    assert await forget_expired_answers(platform) == BATCH + 5
    left = await platform.db.read(
        lambda c: c.execute(select(func.count()).select_from(idempotency_keys)).scalar()
    )
    assert left == 1

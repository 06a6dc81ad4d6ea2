"""Writing events straight to the ledger in tests, as one unit of work each."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from shared.app.platform import Platform
from shared.eventstore.tables import events
from shared.kernel.events.envelope import CommandContext, EventEnvelope, EventPayload, PendingEvent
from tests.support.factories import context


async def append(
    platform: Platform,
    stream_id: str,
    expected_version: int | None,
    events: Sequence[EventPayload | PendingEvent],
    *,
    region: str | None = None,
    ctx: CommandContext | None = None,
    inline: bool = True,
) -> list[EventEnvelope]:
    """Append ``events`` and (``inline``) apply the shared inline read models, as a
    service's command would."""

    def work(conn: Connection) -> list[EventEnvelope]:
        written = platform.store.append_to_stream(
            conn, stream_id, expected_version, events, ctx or context(), region=region
        )
        if inline:
            platform.project_inline(conn, written)
        return written

    return await platform.db.write(work)


async def ledger_head(platform: Platform) -> int:
    """How many events the ledger holds (a command that records nothing leaves it)."""
    count = select(func.count()).select_from(events)
    return int(await platform.db.read(lambda c: c.execute(count).scalar_one()))

"""What a projection is: a named handler of events that owns some read tables."""

from __future__ import annotations

from typing import ClassVar, Protocol

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.kernel.events.envelope import EventEnvelope


class Projection(Protocol):
    """Handlers must be deterministic functions of the events (no wall clock, no random),
    so that a rebuild from zero gives the same rows."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    stream_types: ClassVar[tuple[str, ...]]

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None: ...

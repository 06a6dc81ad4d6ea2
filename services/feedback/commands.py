"""Feedback command handlers: load, decide (pure), append — one transaction each.

The compliance row and the scorecard items are applied in the same transaction, so a
caller reads its own writes at once; the projector's later pass is then a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from services.feedback import domain
from services.feedback.projections import COMPLIANCE, SCORECARD_ITEMS
from shared.app.commands import TicketCommandResult, execute_ticket_command
from shared.app.platform import Platform
from shared.kernel.events.envelope import CommandContext, EventEnvelope, EventPayload
from shared.kernel.events.quality import ScorecardItemRecorded
from shared.kernel.ticket import TicketState

SCORECARD_STREAM_PREFIX = "scorecard-"

# Raises when the caller may not act on this ticket (e.g. outside its region).
Authorize = Callable[[TicketState], None]


def allow_all(state: TicketState) -> None:
    return None


def scorecard_stream_id(service_point_id: str) -> str:
    """One stream per service point; short and fixed-length whatever the point's id."""
    return SCORECARD_STREAM_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, service_point_id))


class FeedbackCommands:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def record_follow_up(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: domain.RecordFollowUp,
        context: CommandContext,
        expected_version: int | None,
        *,
        authorize: Authorize = allow_all,
    ) -> TicketCommandResult:
        threshold = self.platform.settings.feedback.dissatisfied_below

        def decide(state: TicketState) -> list[EventPayload]:
            authorize(state)
            return domain.decide_follow_up(state, command, dissatisfied_below=threshold)

        result = await execute_ticket_command(
            self.platform, conn, ticket_id, context, decide, expected_version=expected_version
        )
        await self.platform.runner.apply(conn, COMPLIANCE, result.events)
        return result

    async def file_complaint(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: domain.FileComplaint,
        context: CommandContext,
        expected_version: int | None,
        *,
        authorize: Authorize = allow_all,
    ) -> TicketCommandResult:
        def decide(state: TicketState) -> list[EventPayload]:
            authorize(state)
            return domain.decide_complaint(state, command)

        result = await execute_ticket_command(
            self.platform, conn, ticket_id, context, decide, expected_version=expected_version
        )
        await self.platform.runner.apply(conn, COMPLIANCE, result.events)
        return result

    async def record_scorecard_item(
        self, conn: AsyncConnection, item: ScorecardItemRecorded, context: CommandContext
    ) -> EventEnvelope:
        written = await self.platform.store.append_to_stream(
            conn,
            scorecard_stream_id(item.service_point_id),
            None,
            [item],
            context,
            region=item.region,
        )
        await self.platform.runner.apply(conn, SCORECARD_ITEMS, written)
        return written[0]

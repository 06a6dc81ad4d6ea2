"""Intake command handlers: validate, decide (pure), append — one transaction each."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake import domain
from services.intake.read_models import find_open_duplicate
from services.intake.tables import ticket_number_counters
from shared.app.commands import TicketCommandResult, execute_ticket_command
from shared.app.platform import Platform
from shared.kernel.events.envelope import CommandContext
from shared.kernel.ticket import TicketState


async def next_ticket_number(conn: AsyncConnection, now: datetime, prefix: str) -> str:
    """``TL-YYYYMMDD-NNNNNN``: unique, and sorts by day (UTC) then arrival."""
    day = now.strftime("%Y%m%d")
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(ticket_number_counters).values(day=day, last_number=1)
    statement = statement.on_conflict_do_update(
        index_elements=[ticket_number_counters.c.day],
        set_={"last_number": ticket_number_counters.c.last_number + 1},
    ).returning(ticket_number_counters.c.last_number)
    number = (await conn.execute(statement)).scalar_one()
    return f"{prefix}-{day}-{number:06d}"


class IntakeCommands:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def receive(
        self, conn: AsyncConnection, command: domain.ReceiveTicket, context: CommandContext
    ) -> TicketCommandResult:
        settings = self.platform.settings
        now = self.platform.clock.now()
        ticket_id = str(uuid.uuid4())
        duplicate = await find_open_duplicate(
            conn, command.customer.phone, command.product.serial_number, command.product.model
        )
        number = await next_ticket_number(conn, now, settings.ticket_number_prefix)

        def decide(state: TicketState):  # type: ignore[no-untyped-def]
            return domain.decide_receive(
                state,
                command,
                ticket_number=number,
                now=now,
                sla=settings.sla,
                warranty_months=settings.warranty_months(command.product.model),
                possible_duplicate_of=duplicate,
            )

        return await execute_ticket_command(self.platform, conn, ticket_id, context, decide)

    async def diagnose(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: domain.DiagnoseTicket,
        context: CommandContext,
        expected_version: int | None,
    ) -> TicketCommandResult:
        now = self.platform.clock.now()
        sla = self.platform.settings.sla
        return await execute_ticket_command(
            self.platform,
            conn,
            ticket_id,
            context,
            lambda state: domain.decide_diagnose(state, command, now=now, sla=sla),
            expected_version=expected_version,
        )

    async def correct_contact(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: domain.CorrectContactDetails,
        context: CommandContext,
        expected_version: int | None,
    ) -> TicketCommandResult:
        return await execute_ticket_command(
            self.platform,
            conn,
            ticket_id,
            context,
            lambda state: domain.decide_correct_contact(state, command),
            expected_version=expected_version,
        )

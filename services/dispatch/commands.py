"""Dispatch command handlers: load → decide (pure) → append, one transaction each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import domain, read_models
from services.dispatch.projections import NETWORK, TICKET_FLAGS
from shared.app.commands import TicketCommandResult, execute_ticket_command, load_ticket
from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import CommandContext, EventEnvelope, EventPayload
from shared.kernel.events.network import ServicePointDescription, TechnicianDescription
from shared.kernel.ticket import TicketState


@dataclass(frozen=True)
class NetworkResult:
    member_id: str
    version: int
    events: list[EventEnvelope]


@dataclass(frozen=True)
class DispatchTicket:
    technician_id: str | None = None
    service_point_id: str | None = None
    window: tuple[datetime, datetime] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Reach:
    """Where the caller may act: a dispatcher's region, a technician's own assignments."""

    region: str | None = None
    technician: str | None = None


class DispatchCommands:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings.dispatch

    # -- the network ---------------------------------------------------------------------

    async def _append_member(
        self,
        conn: AsyncConnection,
        member_id: str,
        context: CommandContext,
        expected_version: int | None,
        decide: Callable[[domain.NetworkMember], Sequence[EventPayload]],
        region: str | None,
    ) -> NetworkResult:
        member = await read_models.load_member(conn, self.platform.store, member_id)
        if expected_version is not None and expected_version != member.version:
            raise ConcurrencyError(member_id, expected_version, member.version)
        written = await self.platform.store.append_to_stream(
            conn, member_id, member.version, decide(member), context, region=region
        )
        await self.platform.runner.apply(conn, NETWORK, written)
        return NetworkResult(member_id, member.version + len(written), written)

    async def register_service_point(
        self,
        conn: AsyncConnection,
        point_id: str,
        description: ServicePointDescription,
        context: CommandContext,
    ) -> NetworkResult:
        parent = await read_models.get_service_point(conn, description.parent_id)
        return await self._append_member(
            conn,
            point_id,
            context,
            None,
            lambda m: domain.decide_register_service_point(m, point_id, description, parent),
            description.region,
        )

    async def update_service_point(
        self,
        conn: AsyncConnection,
        point_id: str,
        description: ServicePointDescription,
        reason: str | None,
        context: CommandContext,
        expected_version: int | None,
    ) -> NetworkResult:
        parent = await read_models.get_service_point(conn, description.parent_id)
        current = await read_models.get_service_point(conn, point_id)

        def decide(member: domain.NetworkMember) -> list[EventPayload]:
            return domain.decide_update_service_point(
                member, point_id, description, parent, current, reason
            )

        return await self._append_member(
            conn, point_id, context, expected_version, decide, description.region
        )

    async def register_technician(
        self,
        conn: AsyncConnection,
        technician_id: str,
        description: TechnicianDescription,
        context: CommandContext,
    ) -> NetworkResult:
        point = await read_models.get_service_point(conn, description.service_point_id)
        return await self._append_member(
            conn,
            technician_id,
            context,
            None,
            lambda m: domain.decide_register_technician(m, technician_id, description, point),
            point.region if point else None,
        )

    async def update_technician(
        self,
        conn: AsyncConnection,
        technician_id: str,
        description: TechnicianDescription,
        reason: str | None,
        context: CommandContext,
        expected_version: int | None,
    ) -> NetworkResult:
        point = await read_models.get_service_point(conn, description.service_point_id)
        return await self._append_member(
            conn,
            technician_id,
            context,
            expected_version,
            lambda m: domain.decide_update_technician(m, technician_id, description, point, reason),
            point.region if point else None,
        )

    async def set_technician_active(
        self,
        conn: AsyncConnection,
        technician_id: str,
        active: bool,
        reason: str,
        context: CommandContext,
        expected_version: int | None,
    ) -> NetworkResult:
        row = await read_models.get_technician_row(conn, technician_id)
        return await self._append_member(
            conn,
            technician_id,
            context,
            expected_version,
            lambda m: domain.decide_set_technician_active(m, technician_id, active, reason),
            row.region if row else None,
        )

    # -- tickets -------------------------------------------------------------------------

    async def candidates(
        self, conn: AsyncConnection, state: TicketState, window: tuple[datetime, datetime] | None
    ) -> list[domain.Candidate]:
        facts = domain.ticket_facts(state)
        points, techs = await read_models.network_in_region(conn, facts.region)
        loads = await read_models.open_loads(
            conn, [t.id for t in techs], except_ticket=state.ticket_id
        )
        return domain.suggest(
            facts,
            points,
            techs,
            loads,
            now=self.platform.clock.now(),
            window=window,
            window_length=timedelta(hours=self.settings.appointment_window_hours),
            horizon_days=self.settings.suggestion_horizon_days,
        )

    async def choose(
        self, conn: AsyncConnection, state: TicketState, command: DispatchTicket
    ) -> domain.Assignment:
        now = self.platform.clock.now()
        domain.check_window(command.window, now)
        facts = domain.ticket_facts(state)
        if command.technician_id is None:
            ranked = await self.candidates(conn, state, command.window)
            if command.service_point_id is not None:
                ranked = [c for c in ranked if c.service_point.id == command.service_point_id]
                if not ranked:
                    raise RuleViolation(
                        "no_technician_available",
                        f"no technician at {command.service_point_id} fits this ticket",
                    )
            best = ranked[0]
            return domain.Assignment(
                best.service_point.id,
                best.technician.id,
                best.appointment_start,
                best.appointment_end,
                domain.suggestion_reason(facts, ranked),
                tuple(ranked),
            )
        row = await read_models.get_technician_row(conn, command.technician_id)
        technician = read_models.technician_info(row) if row else None
        if (
            technician is not None
            and command.service_point_id is not None
            and command.service_point_id != technician.service_point_id
        ):
            raise InvalidCommand(
                "service_point_id",
                f"{technician.id} works at {technician.service_point_id}",
            )
        point = await read_models.get_service_point(
            conn, technician.service_point_id if technician else None
        )
        loads = await read_models.open_loads(
            conn, [command.technician_id], except_ticket=state.ticket_id
        )
        return domain.choose_named(
            facts,
            technician,
            command.technician_id,
            point,
            now=now,
            window=command.window,
            window_length=timedelta(hours=self.settings.appointment_window_hours),
            horizon_days=self.settings.suggestion_horizon_days,
            loads=loads,
        )

    async def dispatch(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: DispatchTicket,
        context: CommandContext,
        expected_version: int | None,
        reach: Reach,
    ) -> tuple[TicketCommandResult, domain.Assignment]:
        state = await load_ticket(self.platform, conn, ticket_id)
        domain.require_reach(state, reach.region, None)
        domain.check_dispatchable(state)
        assignment = await self.choose(conn, state, command)

        def decide(s: TicketState) -> list[EventPayload]:
            domain.require_reach(s, reach.region, None)
            return domain.decide_dispatch(s, assignment, command.reason)

        result = await execute_ticket_command(
            self.platform, conn, ticket_id, context, decide, expected_version=expected_version
        )
        return result, assignment

    async def visit(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        arrived_at: datetime | None,
        findings: str,
        context: CommandContext,
        expected_version: int | None,
        reach: Reach,
    ) -> TicketCommandResult:
        now = self.platform.clock.now()

        def decide(s: TicketState) -> list[EventPayload]:
            domain.require_reach(s, reach.region, reach.technician)
            return domain.decide_visit(s, arrived_at=arrived_at or now, findings=findings, now=now)

        return await execute_ticket_command(
            self.platform, conn, ticket_id, context, decide, expected_version=expected_version
        )

    async def repair(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        command: domain.RecordRepair,
        context: CommandContext,
        expected_version: int | None,
        reach: Reach,
    ) -> TicketCommandResult:
        def decide(s: TicketState) -> list[EventPayload]:
            domain.require_reach(s, reach.region, reach.technician)
            return domain.decide_repair(s, command)

        return await execute_ticket_command(
            self.platform, conn, ticket_id, context, decide, expected_version=expected_version
        )

    # -- SLA clock and repeat repairs ------------------------------------------------------

    async def record_sla_breaches(
        self, conn: AsyncConnection, ticket_id: str, now: datetime, context: CommandContext
    ) -> int:
        result = await execute_ticket_command(
            self.platform,
            conn,
            ticket_id,
            context,
            lambda s: domain.decide_sla(s, now=now),
        )
        await self.platform.runner.apply(conn, TICKET_FLAGS, result.events)
        return sum(1 for e in result.events if e.event_type == "SlaBreached")

"""Parts command handlers: validate, load streams, decide (pure), append — one transaction
each, with the parts read models applied inline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.parts import domain, read_models
from services.parts.projections import match_pending_return, project_inline
from shared.app.commands import TicketCommandResult, execute_ticket_command
from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError, PendingEvent
from shared.kernel.errors import InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import CommandContext, EventEnvelope, EventPayload
from shared.kernel.events.parts import (
    LocationLevel,
    LocationRegistered,
    PartCatalogued,
    PartUpdated,
)
from shared.kernel.events.tickets import OldPartReturned, PartGrade
from shared.kernel.ticket import TicketState, TicketStatus

# Which level may hang under which: the three-level service network.
PARENT_LEVELS = {
    LocationLevel.headquarters: (),
    LocationLevel.regional_center: (LocationLevel.headquarters,),
    LocationLevel.service_point: (LocationLevel.regional_center, LocationLevel.headquarters),
}


@dataclass(frozen=True)
class PartSpec:
    name: str
    fits_models: tuple[str, ...]
    unit_cost: float
    return_required: bool


class PartsCommands:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    # --- plumbing -----------------------------------------------------------------------

    async def append(
        self,
        conn: AsyncConnection,
        stream_id: str,
        expected_version: int,
        payloads: Sequence[EventPayload | PendingEvent],
        context: CommandContext,
        region: str | None = None,
    ) -> list[EventEnvelope]:
        written = await self.platform.store.append_to_stream(
            conn, stream_id, expected_version, payloads, context, region=region
        )
        await self.project(conn, written)
        return written

    async def project(self, conn: AsyncConnection, written: Sequence[EventEnvelope]) -> None:
        try:
            await project_inline(self.platform, conn, written)
        except IntegrityError as exc:
            # The stock table's CHECKs: the second line of defence behind the stream
            # version check. The whole transaction is rolled back.
            raise RuleViolation(
                "stock_cannot_go_negative", "this movement would take stock below zero"
            ) from exc

    async def load_stock(
        self, conn: AsyncConnection, location_id: str, part_number: str
    ) -> domain.StockLevel:
        events = await self.platform.store.read_stream(
            conn, domain.stock_stream(location_id, part_number)
        )
        return domain.fold_stock(location_id, part_number, events)

    async def load_requisition(
        self, conn: AsyncConnection, requisition_id: str, expected_version: int | None
    ) -> domain.RequisitionState:
        stream = domain.requisition_stream(requisition_id)
        state = domain.fold_requisition(
            requisition_id, await self.platform.store.read_stream(conn, stream)
        )
        if state.raised is None:
            raise NotFound("requisition_not_found", f"no requisition {requisition_id}")
        if expected_version is not None and expected_version != state.version:
            raise ConcurrencyError(stream, expected_version, state.version)
        return state

    async def require_location(self, conn: AsyncConnection, location_id: str, field: str) -> Any:
        row = await read_models.get_location(conn, location_id)
        if row is None:
            raise InvalidCommand(field, f"no location {location_id!r} is registered")
        return row

    async def require_part(self, conn: AsyncConnection, part_number: str, field: str) -> Any:
        row = await read_models.get_part(conn, part_number)
        if row is None:
            raise InvalidCommand(field, f"no part {part_number!r} in the catalogue")
        return row

    # --- catalogue and locations ----------------------------------------------------------

    async def put_part(
        self,
        conn: AsyncConnection,
        part_number: str,
        spec: PartSpec,
        context: CommandContext,
        expected_version: int | None,
    ) -> int:
        """Catalogue a part or update its entry; returns the stream version."""
        stream = domain.part_stream(part_number)
        version, _ = await self.platform.store.stream_head(conn, stream)
        if expected_version is not None and expected_version != version:
            raise ConcurrencyError(stream, expected_version, version)
        fields = {
            "part_number": part_number,
            "name": spec.name,
            "fits_models": sorted(set(spec.fits_models)),
            "unit_cost": spec.unit_cost,
            "return_required": spec.return_required,
        }
        if version:
            current = read_models.part_dict(await read_models.get_part(conn, part_number))
            if all(current[k] == v for k, v in fields.items() if k != "part_number"):
                return version  # nothing changed: no event
            payload: EventPayload = PartUpdated(**fields)
        else:
            payload = PartCatalogued(**fields)
        written = await self.append(conn, stream, version, [payload], context)
        return written[-1].stream_version

    async def register_location(
        self,
        conn: AsyncConnection,
        location_id: str,
        name: str,
        level: LocationLevel,
        parent_id: str | None,
        region: str | None,
        context: CommandContext,
    ) -> None:
        if await read_models.get_location(conn, location_id) is not None:
            raise RuleViolation(
                "location_already_registered", f"location {location_id} is registered"
            )
        allowed = PARENT_LEVELS[level]
        if parent_id is None and allowed:
            raise InvalidCommand("parent_id", f"a {level.value} needs a parent location")
        if parent_id is not None:
            if not allowed:
                raise InvalidCommand("parent_id", "headquarters has no parent")
            parent = await self.require_location(conn, parent_id, "parent_id")
            if parent.level not in allowed:
                raise InvalidCommand(
                    "parent_id",
                    f"a {level.value} hangs under "
                    f"{' or '.join(a.value for a in allowed)}, not {parent.level}",
                )
            region = region or parent.region
        payload = LocationRegistered(
            location_id=location_id, name=name, level=level, parent_id=parent_id, region=region
        )
        await self.append(conn, domain.location_stream(location_id), 0, [payload], context, region)

    # --- stock ----------------------------------------------------------------------------

    async def receive_stock(
        self,
        conn: AsyncConnection,
        location_id: str,
        part_number: str,
        quantity: int,
        reference: str | None,
        context: CommandContext,
    ) -> domain.StockLevel:
        location = await self.require_location(conn, location_id, "location_id")
        await self.require_part(conn, part_number, "part_number")
        level = await self.load_stock(conn, location_id, part_number)
        events = domain.decide_receive_stock(level, quantity, reference)
        return await self._move(conn, level, events, context, location.region)

    async def adjust_stock(
        self,
        conn: AsyncConnection,
        location_id: str,
        part_number: str,
        delta: int,
        reason: str,
        context: CommandContext,
        expected_version: int | None,
    ) -> domain.StockLevel:
        location = await self.require_location(conn, location_id, "location_id")
        await self.require_part(conn, part_number, "part_number")
        level = await self.load_stock(conn, location_id, part_number)
        if expected_version is not None and expected_version != level.version:
            raise ConcurrencyError(
                domain.stock_stream(location_id, part_number), expected_version, level.version
            )
        events = domain.decide_adjust_stock(level, delta, reason)
        return await self._move(conn, level, events, context, location.region)

    async def _move(
        self,
        conn: AsyncConnection,
        level: domain.StockLevel,
        events: list[EventPayload],
        context: CommandContext,
        region: str | None,
    ) -> domain.StockLevel:
        stream = domain.stock_stream(level.location_id, level.part_number)
        await self.append(conn, stream, level.version, events, context, region)
        for payload in events:
            level = domain.evolve_stock(level, payload)
        return level

    # --- requisitions ---------------------------------------------------------------------

    async def raise_requisition(
        self,
        conn: AsyncConnection,
        requisition_id: str,
        command: domain.RaiseRequisition,
        ticket: Any,
        context: CommandContext,
    ) -> domain.RequisitionState:
        part = await self.require_part(conn, command.part_number, "part_number")
        fits = json.loads(part.fits_models)
        if fits and ticket.product_model not in fits:
            raise RuleViolation(
                "part_does_not_fit",
                f"{command.part_number} fits {', '.join(fits)}, not {ticket.product_model}",
            )
        chain = await read_models.location_chain(conn, command.requesting_location_id)
        if not chain:
            raise InvalidCommand(
                "location_id", f"no location {command.requesting_location_id!r} is registered"
            )
        levels = [
            await self.load_stock(conn, row.location_id, command.part_number) for row in chain
        ]
        source = domain.choose_source(levels, command.quantity)
        req_events, stock_events = domain.decide_raise(requisition_id, command, source)
        region = chain[0].region
        source_region = next(r.region for r in chain if r.location_id == source.location_id)
        await self.append(
            conn, domain.requisition_stream(requisition_id), 0, req_events, context, region
        )
        # The stock stream's expected version is the one the decision read: a concurrent
        # requisition that took the unit first makes this append fail (409 or retry).
        stream = domain.stock_stream(source.location_id, command.part_number)
        await self.append(conn, stream, source.version, stock_events, context, source_region)
        return self._after(domain.RequisitionState(requisition_id), req_events)

    @staticmethod
    def _after(
        state: domain.RequisitionState, events: Sequence[EventPayload]
    ) -> domain.RequisitionState:
        for payload in events:
            state = domain.evolve_requisition(state, payload)
        return state

    async def _requisition_step(
        self,
        conn: AsyncConnection,
        req: domain.RequisitionState,
        decided: tuple[list[EventPayload], list[EventPayload]],
        level: domain.StockLevel,
        context: CommandContext,
    ) -> domain.RequisitionState:
        req_events, stock_events = decided
        source = await read_models.get_location(conn, level.location_id)
        region = source.region if source else None
        await self.append(
            conn, domain.requisition_stream(req.requisition_id), req.version, req_events, context
        )
        stream = domain.stock_stream(level.location_id, level.part_number)
        await self.append(conn, stream, level.version, stock_events, context, region)
        return self._after(req, req_events)

    async def _source_level(
        self, conn: AsyncConnection, req: domain.RequisitionState
    ) -> domain.StockLevel:
        assert req.raised is not None and req.source_location_id is not None
        return await self.load_stock(conn, req.source_location_id, req.raised.part_number)

    async def issue(
        self,
        conn: AsyncConnection,
        req: domain.RequisitionState,
        technician_id: str,
        context: CommandContext,
    ) -> domain.RequisitionState:
        level = await self._source_level(conn, req)
        decided = domain.decide_issue(req, level, technician_id)
        return await self._requisition_step(conn, req, decided, level, context)

    async def cancel(
        self,
        conn: AsyncConnection,
        req: domain.RequisitionState,
        reason: str,
        context: CommandContext,
    ) -> domain.RequisitionState:
        level = await self._source_level(conn, req)
        decided = domain.decide_cancel(req, level, reason)
        return await self._requisition_step(conn, req, decided, level, context)

    async def return_unused(
        self,
        conn: AsyncConnection,
        req: domain.RequisitionState,
        quantity: int | None,
        reason: str | None,
        context: CommandContext,
    ) -> domain.RequisitionState:
        level = await self._source_level(conn, req)
        decided = domain.decide_return_unused(req, level, quantity, reason)
        return await self._requisition_step(conn, req, decided, level, context)

    # --- old-part returns -----------------------------------------------------------------

    async def record_old_part_return(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        part_number: str,
        old_serial: str | None,
        quantity: int,
        grade: PartGrade | None,
        location_id: str,
        context: CommandContext,
    ) -> tuple[TicketCommandResult, Any]:
        """An old part handed in at ``location_id``: settles the matching expected return
        (late if after its due date). Allowed after the ticket was closed."""
        await self.require_location(conn, location_id, "location_id")
        expected = await match_pending_return(conn, ticket_id, part_number, old_serial)
        if expected is None:
            raise RuleViolation(
                "no_return_expected",
                f"no return of {part_number} is outstanding for ticket {ticket_id}",
            )
        outstanding = expected.quantity - expected.returned_quantity
        if quantity > outstanding:
            raise InvalidCommand("quantity", f"only {outstanding} of {part_number} expected")
        now = self.platform.clock.now()

        def decide(state: TicketState) -> list[EventPayload]:
            if state.status is TicketStatus.new:
                raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
            return [
                OldPartReturned(
                    part_number=part_number,
                    old_serial=old_serial or expected.old_serial,
                    quantity=quantity,
                    location_id=location_id,
                    service_point_id=expected.service_point_id,
                    due_at=expected.due_at,
                    late=now > expected.due_at,
                    grade=grade,
                )
            ]

        result = await execute_ticket_command(self.platform, conn, ticket_id, context, decide)
        await self.project(conn, result.events)
        return result, expected.return_id

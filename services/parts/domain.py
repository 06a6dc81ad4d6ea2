"""Parts rules: pure functions of (command, state) → events. No I/O, no clock, no settings.

Each stream type has a ``Decider`` (initial state, ``evolve``, ``scope``): the catalogue
entry (``PART_ENTRIES``), the stock location (``LOCATIONS``), the stock of one part at one
location (``STOCK_LEVELS``), the requisition (``REQUISITIONS``) and a repaired ticket's
parts paperwork (``TICKET_PARTS``). Commands are dataclasses carrying every fact a decision
needs (the time, settings figures, read-model answers, the other streams' states).

Decisions that touch one stream return its events. Decisions spanning streams (a
requisition reserving stock, consumption on repair) return a ``Decision``: the events per
stream (``Move``), which the handler commits with the stream heads it read.

Identifiers (docs/parts.md): part numbers compare case-insensitively and are stored
upper-case (``normalise_part_number``); location ids compare case-insensitively and keep
the spelling they were registered with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from uuid import UUID

from shared.kernel.decider import Decider
from shared.kernel.errors import Forbidden, InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import EventPayload, PendingEvent
from shared.kernel.events.parts import (
    LocationLevel,
    LocationRegistered,
    OldPartReturnExpected,
    PartCatalogued,
    PartUpdated,
    PartUsageUnmatched,
    RequisitionCancelled,
    RequisitionConsumed,
    RequisitionIssued,
    RequisitionKind,
    RequisitionRaised,
    RequisitionReserved,
    RequisitionReturned,
    StockAdjusted,
    StockConsumed,
    StockIssued,
    StockReceived,
    StockReleased,
    StockReserved,
    StockReturned,
    UsageHistoryRecorded,
)
from shared.kernel.events.tickets import (
    OldPartReturned,
    OldPartReturnOverdue,
    PartGrade,
    TicketRepaired,
    UsedPart,
)
from shared.kernel.lifecycle import AWAITING_REPAIR, TicketStatus, may_follow
from shared.kernel.network import Parent, id_key, refuse_registered, region_in_tree
from shared.kernel.parts import (
    normalise_part_number,
    normalise_serial_number,
    old_serial_key,
    return_expected,
)
from shared.kernel.reach import Reach, Scope
from shared.kernel.ticket import TicketState


def part_stream(part_number: str) -> str:
    return f"part:{part_number}"


def location_stream(location_id: str) -> str:
    return f"location:{location_id}"


def stock_stream(location_id: str, part_number: str) -> str:
    return f"stock:{location_id}:{part_number}"


def requisition_stream(requisition_id: str) -> str:
    return f"req:{requisition_id}"


def ticket_parts_stream(ticket_id: str) -> str:
    return f"tparts:{ticket_id}"


def return_id(stream_id: str, version: int) -> str:
    """An expected return's id: where its OldPartReturnExpected sits (the ticket's parts
    stream, ``tparts:<ticket id>``, and its version there)."""
    return f"{stream_id}:{version}"


def check_return_id(text: str) -> None:
    """ValueError unless ``text`` has the shape of a ``return_id`` (a list's cursor)."""
    prefix, ticket_id, version = text.split(":")  # ValueError: not three parts
    if f"{prefix}:" != ticket_parts_stream("") or not (version.isascii() and version.isdigit()):
        raise ValueError(f"{text!r} is no return id")
    UUID(ticket_id)


def location_key(location_id: str) -> str:
    """Location ids compare case-insensitively: ``SP-HZ-01`` and ``sp-hz-01`` are one
    service point (the spelling a location was registered with is the one kept)."""
    return id_key(location_id)


def same_location(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and location_key(a) == location_key(b)


# --- decisions spanning streams -----------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """The events one decision appends to one stream, and the region they carry."""

    stream_id: str
    events: tuple[EventPayload | PendingEvent, ...]
    region: str | None = None


Decision = list[Move]


@dataclass
class _Moves:
    """Collects a decision's events per stream, in the order streams are first touched."""

    by_stream: dict[str, tuple[str | None, list[EventPayload | PendingEvent]]] = field(
        default_factory=dict
    )

    def add(self, stream_id: str, region: str | None, event: EventPayload | PendingEvent) -> None:
        self.by_stream.setdefault(stream_id, (region, []))[1].append(event)

    def decision(self) -> Decision:
        return [
            Move(sid, tuple(events), region) for sid, (region, events) in self.by_stream.items()
        ]


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    """A catalogue entry's attributes. ``fits_models`` empty: fits any model."""

    name: str
    fits_models: tuple[str, ...]
    unit_cost: float
    return_required: bool

    def normalised(self) -> PartSpec:
        return replace(self, fits_models=tuple(sorted(set(self.fits_models))))


@dataclass(frozen=True)
class PartEntry:
    part_number: str
    version: int = 0
    spec: PartSpec | None = None  # None: not catalogued


def evolve_part(entry: PartEntry, payload: EventPayload, _at: datetime | None = None) -> PartEntry:
    entry = replace(entry, version=entry.version + 1)
    if isinstance(payload, PartCatalogued | PartUpdated):
        spec = PartSpec(
            payload.name, tuple(payload.fits_models), payload.unit_cost, payload.return_required
        )
        return replace(entry, spec=spec.normalised())
    return entry


PART_ENTRIES: Decider[PartEntry] = Decider(
    stream_type="part",
    initial_state=lambda stream_id: PartEntry(stream_id.removeprefix("part:")),
    evolve=evolve_part,
    exists=lambda entry: entry.spec is not None,
)


@dataclass(frozen=True)
class PutPart:
    spec: PartSpec


def decide_put_part(command: PutPart, state: PartEntry) -> list[EventPayload]:
    """Catalogue the part, or update its entry; unchanged attributes record nothing."""
    spec = command.spec.normalised()
    if spec == state.spec:
        return []
    attributes = {
        "part_number": state.part_number,
        "name": spec.name,
        "fits_models": list(spec.fits_models),
        "unit_cost": spec.unit_cost,
        "return_required": spec.return_required,
    }
    if state.spec is None:
        return [PartCatalogued.model_validate(attributes)]
    return [PartUpdated.model_validate(attributes)]


# --- the network of stock locations -------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """A registered stock location, as decisions see it."""

    location_id: str
    level: LocationLevel | None = None  # None: not (or no longer) registered
    region: str | None = None
    parent_id: str | None = None


def location_in_reach(reach: Reach, place: Place) -> bool:
    """A location is nobody's assignment: the caller's region and, for a parts clerk, its
    location decide (the one reach rule, shared/kernel/reach.py)."""
    return reach.allows_region(place.region) and reach.allows_location((place.location_id,))


@dataclass(frozen=True)
class LocationState:
    location_id: str
    version: int = 0
    registered: LocationRegistered | None = None


def evolve_location(
    state: LocationState, payload: EventPayload, _at: datetime | None = None
) -> LocationState:
    state = replace(state, version=state.version + 1)
    if isinstance(payload, LocationRegistered):
        return replace(state, registered=payload)
    return state


def _location_scope(state: LocationState) -> Scope:
    region = state.registered.region if state.registered else None
    return Scope(region=region, locations=(state.location_id,))


LOCATIONS: Decider[LocationState] = Decider(
    stream_type="location",
    initial_state=lambda stream_id: LocationState(stream_id.removeprefix("location:")),
    evolve=evolve_location,
    scope=_location_scope,
    exists=lambda state: state.registered is not None,
    public_id=lambda stream_id: stream_id.removeprefix("location:"),
)


@dataclass(frozen=True)
class NewLocation:
    """What the administrator registers."""

    name: str
    level: LocationLevel
    parent_id: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class RegisterLocation:
    request: NewLocation
    # The parent as registered (None: ``parent_id`` names no registered location).
    parent: Place | None = None
    # A location registered under the same id in another case.
    registered_as: str | None = None


def place_in_tree(
    location_id: str, request: NewLocation, parent: Place | None
) -> tuple[str | None, str | None]:
    """Where a new location hangs: its parent (as registered) and its region, by the
    network's one tree rule (shared/kernel/network.py), for ``PUT /locations/{id}`` and
    the locations import alike."""
    registered = None
    if parent is not None:
        level = parent.level.value if parent.level else None
        registered = Parent(parent.location_id, level, parent.region)
    region = region_in_tree(
        location_id,
        request.level.value,
        request.region,
        request.parent_id,
        registered,
        what="location",
    )
    # The parent as registered (its id's spelling); none when no parent_id was given.
    return (None if parent is None else parent.location_id), region


def decide_register_location(command: RegisterLocation, state: LocationState) -> list[EventPayload]:
    """Registers the location; the same registration again (same spelling, same place in
    the tree) records nothing — a PUT repeated — while any other is 409."""
    if state.registered is not None and _registered_so(command, state):
        return []
    exact = state.location_id if state.registered is not None else None
    refuse_registered(
        command.registered_as or exact,
        rule="location_already_registered",
        field="location_id",
        what="location",
    )
    return [_registration(command, state)]


def _registration(command: RegisterLocation, state: LocationState) -> LocationRegistered:
    r = command.request
    parent_id, region = place_in_tree(state.location_id, r, command.parent)
    return LocationRegistered(
        location_id=state.location_id,
        name=r.name,
        level=r.level,
        parent_id=parent_id,
        region=region,
    )


def _registered_so(command: RegisterLocation, state: LocationState) -> bool:
    """Whether the location is registered already as ``command`` would register it."""
    try:
        return state.registered == _registration(command, state)
    except (InvalidCommand, RuleViolation):  # no valid registration: not this one
        return False


# --- stock: the fold of a stock stream ----------------------------------------------------


@dataclass(frozen=True)
class StockLevel:
    location_id: str
    part_number: str
    version: int = 0
    on_hand: int = 0  # physically at the location, reserved units included
    reserved: int = 0
    issued: int = 0  # handed to technicians, not yet consumed or returned
    # The location's region (the events do not carry it: the handler places the state).
    region: str | None = None
    # What an import of the replaced system's history recorded: the opening balance (None:
    # none), the months of usage history; and whether any stock has moved at all.
    opening_balance: int | None = None
    usage_months: Mapping[str, int] = field(default_factory=dict)  # month → quantity
    moved: bool = False

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def evolve_stock(
    level: StockLevel, payload: EventPayload, _at: datetime | None = None
) -> StockLevel:
    s = replace(level, version=level.version + 1, moved=True)
    match payload:
        case StockReceived() if payload.opening_balance:
            return replace(
                s, on_hand=s.on_hand + payload.quantity, opening_balance=payload.quantity
            )
        case StockReceived():
            return replace(s, on_hand=s.on_hand + payload.quantity)
        case UsageHistoryRecorded():
            months = {**level.usage_months, payload.month: payload.quantity}
            return replace(s, moved=level.moved, usage_months=months)
        case StockReserved():
            return replace(s, reserved=s.reserved + payload.quantity)
        case StockReleased():
            return replace(s, reserved=s.reserved - payload.quantity)
        case StockIssued():
            q = payload.quantity
            return replace(s, on_hand=s.on_hand - q, reserved=s.reserved - q, issued=s.issued + q)
        case StockConsumed():
            if payload.from_issued:
                return replace(s, issued=s.issued - payload.quantity)
            return replace(s, on_hand=s.on_hand - payload.quantity)
        case StockReturned():
            q = payload.quantity
            return replace(s, issued=s.issued - q, on_hand=s.on_hand + q)
        case StockAdjusted():
            return replace(s, on_hand=s.on_hand + payload.delta)
    return s


def _stock_from_stream(stream_id: str) -> StockLevel:
    _, location_id, part_number = stream_id.split(":", 2)
    return StockLevel(location_id, part_number)


STOCK_LEVELS: Decider[StockLevel] = Decider(
    stream_type="stock",
    initial_state=_stock_from_stream,
    evolve=evolve_stock,
    scope=lambda level: Scope(region=level.region, locations=(level.location_id,)),
    cache_states=True,  # an event per movement, for years; no personal data
)


@dataclass(frozen=True)
class StockReceipt:
    """Parts arrived; ``location_id`` None: the parts clerk's own location."""

    part_number: str
    quantity: int
    location_id: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class ReceiveStock:
    receipt: StockReceipt
    catalogued: bool


@dataclass(frozen=True)
class StockCount:
    """A correction of the count at a location."""

    location_id: str
    part_number: str
    delta: int
    reason: str


@dataclass(frozen=True)
class AdjustStock:
    count: StockCount
    catalogued: bool


def acting_location(given: str | None, clerk_location: str | None) -> str:
    """Where a stock movement happens: the location given, else the parts clerk's own."""
    location = given or clerk_location
    if location is None:
        raise InvalidCommand("location_id", "location_id is required for this role")
    return location


def _require_catalogued(catalogued: bool, part_number: str) -> None:
    if not catalogued:
        raise InvalidCommand("part_number", f"no part {part_number!r} in the catalogue")


def decide_receive_stock(command: ReceiveStock, level: StockLevel) -> list[EventPayload]:
    r = command.receipt
    _require_catalogued(command.catalogued, r.part_number)
    return [
        StockReceived(
            location_id=level.location_id,
            part_number=level.part_number,
            quantity=r.quantity,
            reference=r.reference,
        )
    ]


def decide_adjust_stock(command: AdjustStock, level: StockLevel) -> list[EventPayload]:
    c = command.count
    _require_catalogued(command.catalogued, c.part_number)
    if c.delta == 0:
        raise InvalidCommand("delta", "an adjustment must change the stock")
    if level.on_hand + c.delta < level.reserved:
        below = (
            "below zero: stock cannot be negative"
            if level.on_hand + c.delta < 0
            else f"below the {level.reserved} reserved"
        )
        raise RuleViolation(
            "stock_below_reserved",
            f"on hand would be {level.on_hand + c.delta} ({level.on_hand} on hand, adjusted by "
            f"{c.delta:+d}), {below}",
        )
    return [
        StockAdjusted(
            location_id=level.location_id,
            part_number=level.part_number,
            delta=c.delta,
            reason=c.reason,
        )
    ]


# --- history carried over from the replaced system (imports) -----------------------------


@dataclass(frozen=True)
class RecordOpeningBalance:
    """The stock counted at the location when Ticketline took over (``counted_at``)."""

    quantity: int
    counted_at: datetime
    catalogued: bool
    reference: str | None = None


def decide_opening_balance(
    command: RecordOpeningBalance, level: StockLevel
) -> list[EventPayload | PendingEvent]:
    """Once per location and part, before any other movement; nothing on hand records
    nothing."""
    _require_catalogued(command.catalogued, level.part_number)
    if level.opening_balance is not None:
        raise RuleViolation(
            "opening_balance_recorded",
            f"{level.part_number} at {level.location_id} has an opening balance "
            f"({level.opening_balance})",
        )
    if level.moved:
        raise RuleViolation(
            "stock_already_moved",
            f"{level.part_number} at {level.location_id} has stock movements; adjust it instead",
        )
    if command.quantity < 0:
        raise InvalidCommand("quantity", "an opening balance is 0 or more")
    if command.quantity == 0:
        return []
    received = StockReceived(
        location_id=level.location_id,
        part_number=level.part_number,
        quantity=command.quantity,
        reference=command.reference,
        opening_balance=True,
    )
    return [PendingEvent(received, occurred_at=command.counted_at)]


@dataclass(frozen=True)
class RecordUsageHistory:
    """Units used in one past calendar month (``YYYY-MM``) as the replaced system recorded
    them; ``current_month``: the month of the import (history is for months before it)."""

    month: str
    quantity: int
    current_month: str
    catalogued: bool


def decide_usage_history(
    command: RecordUsageHistory, level: StockLevel
) -> list[EventPayload | PendingEvent]:
    _require_catalogued(command.catalogued, level.part_number)
    if command.month >= command.current_month:
        raise InvalidCommand("month", "usage history is for months before the current one")
    if command.month in level.usage_months:
        raise RuleViolation(
            "usage_history_recorded",
            f"{level.part_number} at {level.location_id} has usage for {command.month}",
        )
    usage = UsageHistoryRecorded(
        location_id=level.location_id,
        part_number=level.part_number,
        month=command.month,
        quantity=command.quantity,
    )
    year, month = (int(x) for x in command.month.split("-"))
    return [PendingEvent(usage, occurred_at=datetime(year, month, 1, tzinfo=UTC))]


# --- requisitions -------------------------------------------------------------------------


@dataclass(frozen=True)
class RequisitionState:
    requisition_id: str
    version: int = 0
    raised: RequisitionRaised | None = None
    source_location_id: str | None = None
    technician_id: str | None = None
    status: str = "new"  # raised | reserved | issued | consumed | returned | cancelled
    issued: int = 0
    consumed: int = 0
    returned: int = 0
    # The requesting location's region (placed by the handler, like a stock level's).
    region: str | None = None
    # The technician the ticket is assigned to now (placed by the handler from the ticket's
    # stream where the caller's reach is checked: ``requisition_scope``).
    assignee: str | None = None
    # Whether that ticket is closed (placed with ``assignee``): nothing would use its parts.
    ticket_closed: bool = False
    # The ledger position of its RequisitionRaised (placed by the handler where the order
    # of a ticket's requisitions matters: ``consumption_order``). None: not placed.
    raised_position: int | None = None

    @property
    def outstanding(self) -> int:
        """Issued to the technician and neither consumed nor brought back."""
        return self.issued - self.consumed - self.returned


def consumption_order(requisitions: Iterable[RequisitionState]) -> list[RequisitionState]:
    """The order a repair consumes a ticket's open requisitions in: those issued (the
    parts are in the technician's hands) before those still only reserved; within each,
    the oldest first — in the order they were raised (the ledger position of their
    RequisitionRaised; the id decides only between requisitions whose position is not
    known). Settled and cancelled requisitions are not consumed."""

    def key(req: RequisitionState) -> tuple[int, int, int, str]:
        unplaced = req.raised_position is None
        return (
            0 if req.status == "issued" else 1,
            int(unplaced),
            req.raised_position or 0,
            req.requisition_id,
        )

    return sorted((r for r in requisitions if r.status in ("issued", "reserved")), key=key)


def settled_status(issued: int, consumed: int, returned: int) -> str:
    """A requisition's status once parts were issued: ``issued`` while some are out,
    then ``consumed`` (something was used) or ``returned`` (all came back)."""
    if issued - consumed - returned > 0:
        return "issued"
    return "consumed" if consumed else "returned"


def evolve_requisition(
    state: RequisitionState, payload: EventPayload, _at: datetime | None = None
) -> RequisitionState:
    s = replace(state, version=state.version + 1)
    match payload:
        case RequisitionRaised():
            return replace(s, raised=payload, status="raised", technician_id=payload.technician_id)
        case RequisitionReserved():
            return replace(s, status="reserved", source_location_id=payload.source_location_id)
        case RequisitionIssued():
            s = replace(s, technician_id=payload.technician_id, issued=s.issued + payload.quantity)
        case RequisitionConsumed():
            s = replace(s, consumed=s.consumed + payload.quantity)
        case RequisitionReturned():
            s = replace(s, returned=s.returned + payload.quantity)
        case RequisitionCancelled():
            return replace(s, status="cancelled")
        case _:
            return s
    return replace(s, status=settled_status(s.issued, s.consumed, s.returned))


def requisition_place(region: str | None, assignee: str | None, *locations: str | None) -> Scope:
    """Where a requisition sits (the reach rule, for its commands and its reads alike): its
    requesting location's region; with the technician its ticket is assigned to *now* —
    the requisition is for the ticket's repair, so after a re-dispatch it sits with the new
    technician, no longer with the one it was raised for or issued to; at its requesting
    and source locations."""
    return Scope(region=region, assignee=assignee, locations=tuple(x for x in locations if x))


def requisition_scope(state: RequisitionState) -> Scope:
    requesting = state.raised.requesting_location_id if state.raised else None
    return requisition_place(state.region, state.assignee, requesting, state.source_location_id)


REQUISITIONS: Decider[RequisitionState] = Decider(
    stream_type="requisition",
    initial_state=lambda stream_id: RequisitionState(stream_id.removeprefix("req:")),
    evolve=evolve_requisition,
    scope=requisition_scope,
    exists=lambda state: state.raised is not None,
    public_id=lambda stream_id: stream_id.removeprefix("req:"),
)


def require_requisition(state: RequisitionState) -> RequisitionRaised:
    if state.raised is None:
        raise NotFound("requisition_not_found", f"no requisition {state.requisition_id}")
    return state.raised


def ticket_technician(ticket: TicketState) -> str | None:
    """The ticket's current technician: its latest dispatch's (None: not dispatched)."""
    return ticket.dispatch.technician_id if ticket.dispatch else None


def checked_technician(given: str | None, current: str | None, ticket_id: str) -> str | None:
    """Whom a requisition's parts go to: the ticket's current technician. The parts
    service keeps no register of technicians (dispatch does), so a ``technician_id`` given
    is checked against the one it knows, the ticket's latest dispatch: another one, or
    any one while the ticket has none, is refused naming ``technician_id``."""
    if given is None or given == current:
        return current
    if current is None:
        raise InvalidCommand(
            "technician_id",
            f"ticket {ticket_id} is not dispatched to a technician; leave technician_id out",
        )
    raise InvalidCommand(
        "technician_id",
        f"ticket {ticket_id} is dispatched to {current}, not {given}: parts go to the "
        "ticket's technician",
    )


@dataclass(frozen=True)
class PartsRequest:
    """What the caller asks for. ``location_id`` None: the parts clerk's location, else
    the ticket's service point; ``technician_id`` None: the ticket's technician."""

    ticket_id: str
    part_number: str
    quantity: int = 1
    kind: RequisitionKind = RequisitionKind.planned
    location_id: str | None = None
    technician_id: str | None = None
    notes: str | None = None


def requesting_location(
    request: PartsRequest, ticket: TicketState, clerk_location: str | None
) -> str | None:
    dispatched_to = ticket.dispatch.service_point_id if ticket.dispatch else None
    return request.location_id or clerk_location or dispatched_to


@dataclass(frozen=True)
class RaiseRequisition:
    request: PartsRequest
    ticket: TicketState
    part: PartSpec | None  # the catalogue entry (None: not catalogued)
    # The part's stock at the requesting location, its parent, … up to headquarters
    # (nearest first; empty: no requesting location).
    chain: tuple[StockLevel, ...]
    # The caller when it is a technician (its id): it raises requisitions for itself only.
    caller_technician: str | None = None
    # The region the requesting location serves (None: headquarters, every region).
    requesting_region: str | None = None


def choose_source(levels: Sequence[StockLevel], quantity: int) -> StockLevel:
    """The nearest location (the list is in tree order: the requesting point, its regional
    center, headquarters) whose available stock covers the whole quantity."""
    for level in levels:
        if level.available >= quantity:
            return level
    searched = ", ".join(f"{lv.location_id} ({lv.available} available)" for lv in levels)
    raise RuleViolation("out_of_stock", f"no location holds {quantity} available: {searched}")


def _require_requestable(command: RaiseRequisition) -> PartSpec:
    r, ticket = command.request, command.ticket
    if not ticket.exists or ticket.received is None:
        raise NotFound("ticket_not_found", f"no ticket {r.ticket_id}")
    if ticket.status is TicketStatus.closed:
        raise RuleViolation("ticket_closed", "parts cannot be requested for a closed ticket")
    if ticket.status not in AWAITING_REPAIR:
        raise RuleViolation(
            "no_repair_pending",
            f"the ticket is {ticket.status.value}: parts are requested between its diagnosis "
            "and its repair (or after a reopening)",
        )
    part = command.part
    if part is None:
        raise InvalidCommand("part_number", f"no part {r.part_number!r} in the catalogue")
    model = ticket.received.product.model
    if part.fits_models and model not in part.fits_models:
        raise RuleViolation(
            "part_does_not_fit", f"{r.part_number} fits {', '.join(part.fits_models)}, not {model}"
        )
    if not command.chain:
        raise InvalidCommand("location_id", "location_id is required for this role")
    require_serves_ticket(command.chain[0].location_id, command.requesting_region, ticket)
    return part


def serves_ticket(serves: str | None, ticket: TicketState) -> bool:
    """Whether a location serving region ``serves`` (None: headquarters, every region)
    works for ``ticket``."""
    return serves is None or serves.casefold() == (ticket.region or "").casefold()


def require_serves_ticket(location_id: str, serves: str | None, ticket: TicketState) -> None:
    """A location works for its region's tickets: naming another region's is 422."""
    if not serves_ticket(serves, ticket):
        raise InvalidCommand(
            "location_id", f"{location_id} serves region {serves}, the ticket is in {ticket.region}"
        )


def require_own_requisition(request: PartsRequest, caller_technician: str | None) -> None:
    """A technician caller raises requisitions for itself: naming another is 403 (asked
    before anything the request names is looked up: the caller may not ask at all)."""
    named = request.technician_id
    if caller_technician is not None and named is not None and named != caller_technician:
        raise Forbidden(
            "technician_id",
            f"a technician raises requisitions for itself ({caller_technician}), not for {named}",
        )


def requisition_technician(command: RaiseRequisition) -> str | None:
    """The requisition's technician: the ticket's current one (``checked_technician``)."""
    r, caller = command.request, command.caller_technician
    require_own_requisition(r, caller)
    current = ticket_technician(command.ticket)
    return checked_technician(r.technician_id or caller, current, r.ticket_id)


def decide_raise(command: RaiseRequisition, state: RequisitionState) -> Decision:
    """Reserve the whole quantity at the nearest location holding it."""
    if state.raised is not None:
        raise RuleViolation("requisition_exists", f"requisition {state.requisition_id} exists")
    _require_requestable(command)
    technician = requisition_technician(command)
    r, requesting = command.request, command.chain[0]
    source = choose_source(command.chain, r.quantity)
    raised = RequisitionRaised(
        requisition_id=state.requisition_id,
        ticket_id=r.ticket_id,
        kind=r.kind,
        part_number=r.part_number,
        quantity=r.quantity,
        requesting_location_id=requesting.location_id,
        technician_id=technician,
        notes=r.notes,
    )
    reserved = StockReserved(
        location_id=source.location_id,
        part_number=r.part_number,
        quantity=r.quantity,
        requisition_id=state.requisition_id,
        ticket_id=r.ticket_id,
    )
    return [
        Move(
            requisition_stream(state.requisition_id),
            (
                raised,
                RequisitionReserved(source_location_id=source.location_id, quantity=r.quantity),
            ),
            requesting.region,
        ),
        Move(stock_stream(source.location_id, r.part_number), (reserved,), source.region),
    ]


def _ref(state: RequisitionState) -> dict[str, str]:
    raised = require_requisition(state)
    return {"requisition_id": state.requisition_id, "ticket_id": raised.ticket_id}


def _step(
    state: RequisitionState, source: StockLevel, step: EventPayload, movement: EventPayload
) -> Decision:
    return [
        Move(requisition_stream(state.requisition_id), (step,), state.region),
        Move(stock_stream(source.location_id, source.part_number), (movement,), source.region),
    ]


@dataclass(frozen=True)
class IssueRequisition:
    source: StockLevel  # the reserving location's stock of the part
    technician_id: str | None = None  # None: the ticket's current technician
    # The ticket's current technician (``ticket_technician``; after a re-dispatch, the new
    # one): the parts go to them.
    ticket_technician: str | None = None


def decide_issue(command: IssueRequisition, state: RequisitionState) -> Decision:
    raised = require_requisition(state)
    if state.status != "reserved":
        raise RuleViolation("requisition_not_reserved", f"the requisition is {state.status}")
    if state.ticket_closed:  # its reservation is being released (the closing's reactor)
        raise RuleViolation(
            "ticket_closed", f"ticket {raised.ticket_id} is closed: nothing would use the parts"
        )
    technician = checked_technician(
        command.technician_id, command.ticket_technician, raised.ticket_id
    )
    if technician is None:
        raise InvalidCommand(
            "technician_id",
            f"ticket {raised.ticket_id} is not dispatched to a technician to hand the parts to",
        )
    q, level = raised.quantity, command.source
    if level.reserved < q or level.on_hand < q:
        raise RuleViolation("stock_not_reserved", "the reserved stock is no longer there")
    issued = StockIssued(
        location_id=level.location_id,
        part_number=level.part_number,
        quantity=q,
        technician_id=technician,
        **_ref(state),
    )
    return _step(state, level, RequisitionIssued(technician_id=technician, quantity=q), issued)


@dataclass(frozen=True)
class CancelRequisition:
    source: StockLevel
    reason: str


# The reason of the cancellations a ticket's closing makes (``commands.release_on_close``).
CLOSED_TICKET_REASON = "ticket closed"


def decide_cancel(command: CancelRequisition, state: RequisitionState) -> Decision:
    raised = require_requisition(state)
    if state.status != "reserved":
        raise RuleViolation(
            "requisition_not_cancellable",
            f"only a reserved requisition can be cancelled; this one is {state.status}"
            + (" (return issued parts instead)" if state.status == "issued" else ""),
        )
    level = command.source
    released = StockReleased(
        location_id=level.location_id,
        part_number=level.part_number,
        quantity=raised.quantity,
        reason=command.reason,
        **_ref(state),
    )
    return _step(state, level, RequisitionCancelled(reason=command.reason), released)


@dataclass(frozen=True)
class ReturnUnused:
    source: StockLevel
    quantity: int | None = None  # None: all outstanding
    reason: str | None = None


def decide_return_unused(command: ReturnUnused, state: RequisitionState) -> Decision:
    require_requisition(state)
    if state.status != "issued" or state.outstanding <= 0:
        raise RuleViolation(
            "nothing_to_return", f"no issued parts are outstanding (requisition {state.status})"
        )
    q = state.outstanding if command.quantity is None else command.quantity
    if q > state.outstanding:
        parts = "part is" if state.outstanding == 1 else "parts are"
        raise InvalidCommand("quantity", f"only {state.outstanding} issued {parts} outstanding")
    level = command.source
    back = StockReturned(
        location_id=level.location_id, part_number=level.part_number, quantity=q, **_ref(state)
    )
    return _step(state, level, RequisitionReturned(quantity=q, reason=command.reason), back)


# --- consumption on repair ----------------------------------------------------------------


@dataclass(frozen=True)
class TicketParts:
    """A repaired ticket's parts paperwork (stream ``tparts:<ticket id>``)."""

    ticket_id: str
    version: int = 0


TICKET_PARTS: Decider[TicketParts] = Decider(
    stream_type="requisition",
    initial_state=lambda stream_id: TicketParts(stream_id.removeprefix("tparts:")),
    evolve=lambda state, _payload, _at: replace(state, version=state.version + 1),
)


@dataclass(frozen=True)
class ConsumeOnRepair:
    """One TicketRepaired with what the parts service knows at that moment."""

    ticket_id: str
    trigger_event_id: str
    repaired_at: datetime
    repair: TicketRepaired
    region: str | None  # the ticket's
    service_point_id: str | None  # where the ticket was dispatched (as registered, if it is)
    return_days: float
    return_required: Mapping[str, bool]  # catalogue flag per (normalised) part number
    requisitions: tuple[RequisitionState, ...]  # the ticket's open requisitions
    # Stock of the requisitions' sources and of the service point's shelf, by
    # (location, part): a stock stream the decision moves must be here.
    levels: Mapping[tuple[str, str], StockLevel]


@dataclass
class _Consumption:
    """The working state of one consumption decision: streams as they stand after the
    events decided so far."""

    command: ConsumeOnRepair
    requisitions: dict[str, RequisitionState]
    levels: dict[tuple[str, str], StockLevel]
    moves: _Moves = field(default_factory=_Moves)

    def at_repair(self, payload: EventPayload) -> PendingEvent:
        return PendingEvent(payload, occurred_at=self.command.repaired_at)

    def move_requisition(self, rid: str, payload: EventPayload) -> RequisitionState:
        req = self.requisitions[rid]
        self.moves.add(requisition_stream(rid), req.region, self.at_repair(payload))
        self.requisitions[rid] = evolve_requisition(req, payload)
        return self.requisitions[rid]

    def move_stock(self, location_id: str, part: str, payload: EventPayload) -> None:
        level = self.levels.get((location_id, part))
        region = level.region if level else None
        self.moves.add(stock_stream(location_id, part), region, self.at_repair(payload))
        if level is not None:
            self.levels[(location_id, part)] = evolve_stock(level, payload)

    def paperwork(self, payload: EventPayload) -> None:
        stream = ticket_parts_stream(self.command.ticket_id)
        self.moves.add(stream, self.command.region, self.at_repair(payload))


def _hand_over(book: _Consumption, req: RequisitionState, part: str) -> RequisitionState:
    """A requisition still only reserved was fitted before the clerk recorded the
    hand-over: the repair proves it."""
    raised, source = require_requisition(req), req.source_location_id
    assert source is not None
    technician = book.command.repair.technician_id or req.technician_id or "unrecorded"
    issued = StockIssued(
        location_id=source,
        part_number=part,
        quantity=raised.quantity,
        technician_id=technician,
        **_ref(req),
    )
    handed = RequisitionIssued(technician_id=technician, quantity=raised.quantity)
    req = book.move_requisition(req.requisition_id, handed)
    book.move_stock(source, part, issued)
    return req


def _consume_issued(book: _Consumption, part: str, wanted: int) -> int:
    """Consume what was issued (or is still reserved) for the ticket, in
    ``consumption_order``; returns what is left of ``wanted``."""
    remaining = wanted
    for req in consumption_order(book.requisitions.values()):
        rid = req.requisition_id
        if remaining == 0:
            break
        if req.raised is None or req.raised.part_number != part:
            continue
        if req.status == "reserved":
            req = _hand_over(book, req, part)
        if req.outstanding <= 0:
            continue
        take = min(req.outstanding, remaining)
        remaining -= take
        trigger = book.command.trigger_event_id
        book.move_requisition(rid, RequisitionConsumed(quantity=take, trigger_event_id=trigger))
        assert req.source_location_id is not None
        consumed = StockConsumed(
            location_id=req.source_location_id,
            part_number=part,
            quantity=take,
            from_issued=True,
            trigger_event_id=trigger,
            **_ref(req),
        )
        book.move_stock(req.source_location_id, part, consumed)
    return remaining


def _consume_shelf(book: _Consumption, part: str, wanted: int) -> int:
    """Then the service point's available shelf stock; returns what is still left."""
    c = book.command
    level = book.levels.get((c.service_point_id, part)) if c.service_point_id else None
    if not wanted or level is None or level.available <= 0:
        return wanted
    take = min(level.available, wanted)
    consumed = StockConsumed(
        location_id=level.location_id,
        part_number=part,
        quantity=take,
        ticket_id=c.ticket_id,
        from_issued=False,
        trigger_event_id=c.trigger_event_id,
    )
    book.move_stock(level.location_id, part, consumed)
    return wanted - take


def _paperwork(book: _Consumption, line: UsedPart, part: str, unmatched: int) -> None:
    """What no stock covered is recorded (stock never goes negative); an old part that
    must come back gets an expected return."""
    c = book.command
    if unmatched:
        book.paperwork(
            PartUsageUnmatched(
                ticket_id=c.ticket_id,
                part_number=part,
                quantity=unmatched,
                service_point_id=c.service_point_id,
                trigger_event_id=c.trigger_event_id,
            )
        )
    if return_expected(line, c.repair.cost_borne_by, c.return_required.get(part, False)):
        book.paperwork(
            OldPartReturnExpected(
                ticket_id=c.ticket_id,
                part_number=part,
                old_serial=line.old_serial,
                quantity=line.quantity,
                service_point_id=c.service_point_id,
                region=c.region,
                due_at=c.repaired_at + timedelta(days=c.return_days),
                trigger_event_id=c.trigger_event_id,
            )
        )


def decide_consumption(command: ConsumeOnRepair, state: TicketParts) -> Decision:
    """For every used part: consume what was issued for the ticket first, then the service
    point's shelf; what neither covers is recorded as unmatched. All dated at the repair."""
    book = _Consumption(
        command, {r.requisition_id: r for r in command.requisitions}, dict(command.levels)
    )
    for line in command.repair.parts_used:
        part = normalise_part_number(line.part_number)
        remaining = _consume_issued(book, part, line.quantity)
        remaining = _consume_shelf(book, part, remaining)
        _paperwork(book, line, part, remaining)
    return book.moves.decision()


# --- old-part returns ---------------------------------------------------------------------


@dataclass(frozen=True)
class PendingReturn:
    """An expected old-part return not yet settled."""

    return_id: str
    ticket_id: str
    part_number: str
    old_serial: str | None
    quantity: int
    returned_quantity: int
    due_at: datetime
    service_point_id: str | None = None

    @property
    def outstanding(self) -> int:
        return self.quantity - self.returned_quantity


def choose_pending_return(
    pending: Sequence[PendingReturn],
    part_number: str,
    old_serial: str | None,
    service_point_id: str | None = None,
) -> PendingReturn | None:
    """The expected return a handed-in old part settles: of that part (and, when given,
    of that service point: a parts clerk settles its own point's), the one with the same
    old serial if one is pending, otherwise the earliest due. The return command and the
    returns read model both ask this (the read model with the event's service point), so
    both pick the same one."""
    part = normalise_part_number(part_number)
    candidates = sorted(
        (
            p
            for p in pending
            if normalise_part_number(p.part_number) == part
            and (service_point_id is None or same_location(p.service_point_id, service_point_id))
        ),
        key=lambda p: (p.due_at, p.return_id),
    )
    if old_serial is not None:
        wanted = normalise_serial_number(old_serial)
        for candidate in candidates:
            if old_serial_key(candidate.old_serial) == wanted:
                return candidate
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class HandedIn:
    """An old part handed in; ``location_id`` None: at the parts clerk's location."""

    ticket_id: str
    part_number: str
    old_serial: str | None = None
    quantity: int = 1
    grade: PartGrade | None = None
    location_id: str | None = None


@dataclass(frozen=True)
class RecordOldPartReturn:
    handed_in: HandedIn
    location_id: str  # where it was handed in, as registered
    expected: PendingReturn | None  # what it settles (``choose_pending_return``)
    now: datetime
    location_serves: str | None = None  # the region it serves (None: headquarters)


def decide_old_part_return(command: RecordOldPartReturn, state: TicketState) -> list[EventPayload]:
    """Settles the expected return (late if after its due date); also after the ticket was
    closed."""
    h, expected = command.handed_in, command.expected
    require_serves_ticket(command.location_id, command.location_serves, state)
    if expected is None:
        raise RuleViolation(
            "no_return_expected",
            f"no return of {h.part_number} is outstanding for ticket {h.ticket_id} (a "
            "repair's returns are expected moments after it: GET /returns?ticket_id= lists "
            "them, retry then)",
        )
    serial = old_serial_key(h.old_serial)
    expects_it = old_serial_key(expected.old_serial) == serial  # (rest of a part-settled one)
    returned = (normalise_part_number(h.part_number), serial) in state.returned_serials
    if serial and returned and not expects_it:
        raise RuleViolation(
            "old_serial_not_expected",
            f"old serial {h.old_serial} of {h.part_number} was already returned for ticket "
            f"{h.ticket_id}",
        )
    if serial and old_serial_key(expected.old_serial) not in (None, serial):
        # No outstanding return expects this serial (``choose_pending_return`` prefers the
        # one that does): settling another would close a return whose part never came back.
        raise RuleViolation(
            "old_serial_not_expected",
            f"no outstanding return of {h.part_number} for ticket {h.ticket_id} expects old "
            f"serial {h.old_serial} (the next expected is {expected.old_serial}); give no "
            "old_serial to settle the earliest due",
        )
    if h.quantity > expected.outstanding:
        serial_said = f" (old serial {expected.old_serial})" if expected.old_serial else ""
        raise InvalidCommand(
            "quantity",
            f"a return settles one expected return: the earliest due of {h.part_number}"
            f"{serial_said} expects {expected.outstanding}; hand the others in as returns "
            "of their own",
        )
    if not may_follow(state.status, OldPartReturned.event_type):
        raise NotFound("ticket_not_found", f"no ticket {h.ticket_id}")
    return [
        OldPartReturned(
            part_number=h.part_number,
            old_serial=h.old_serial or expected.old_serial,
            quantity=h.quantity,
            location_id=command.location_id,
            service_point_id=expected.service_point_id,
            due_at=expected.due_at,
            late=command.now > expected.due_at,
            grade=h.grade,
        )
    ]


@dataclass(frozen=True)
class RecordOverdue:
    expected: PendingReturn
    detected_at: datetime


def decide_overdue(command: RecordOverdue, state: TicketState) -> list[EventPayload]:
    e = command.expected
    if not may_follow(state.status, OldPartReturnOverdue.event_type):
        raise NotFound("ticket_not_found", f"no ticket {e.ticket_id}")
    return [
        OldPartReturnOverdue(
            part_number=e.part_number,
            old_serial=e.old_serial,
            quantity=e.outstanding,
            service_point_id=e.service_point_id,
            due_at=e.due_at,
            detected_at=command.detected_at,
        )
    ]


# --- replenishment ------------------------------------------------------------------------


def previous_months(now: datetime, count: int) -> list[str]:
    """The ``count`` full calendar months before ``now``'s month, oldest first."""
    year, month = now.year, now.month
    months: list[str] = []
    for _ in range(count):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        months.append(f"{year:04d}-{month:02d}")
    return list(reversed(months))


@dataclass(frozen=True)
class Suggestion:
    average_monthly_usage: Decimal
    raw: Decimal
    suggested_quantity: int


def suggest_order(
    usage_by_month: Sequence[int],
    *,
    months_of_cover: float,
    seasonal_coefficient: float,
    current_stock: int,
) -> Suggestion:
    """``months_of_cover × average monthly usage × seasonal coefficient − current stock``,
    never below zero, rounded up to whole units. Exact fractions (the settings read as
    the decimals they are written as), so that neither binary floats (3 × 4.2 × 1.5) nor a
    rounded average (3 × 5/3 = 5.000…01) push a whole number over to the next unit."""
    months = len(usage_by_month)
    average = Fraction(sum(usage_by_month), months) if months else Fraction(0)
    raw = (
        Fraction(str(months_of_cover)) * average * Fraction(str(seasonal_coefficient))
        - current_stock
    )
    suggested = math.ceil(raw) if raw > 0 else 0
    return Suggestion(_shown(average), _shown(raw), suggested)


def _shown(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class PlanReplenishment:
    months: tuple[str, ...]  # the full months averaged, oldest first
    months_of_cover: float
    seasonal_coefficient: float
    stock: Mapping[str, tuple[int, int]]  # part → (on hand, reserved) at the location
    usage: Mapping[str, Mapping[str, int]]  # part → month → consumed there


@dataclass(frozen=True)
class PlannedOrder:
    part_number: str
    usage_by_month: dict[str, int]
    on_hand: int
    reserved: int
    suggestion: Suggestion

    @property
    def current_stock(self) -> int:
        return self.on_hand - self.reserved


def plan_replenishment(command: PlanReplenishment) -> list[PlannedOrder]:
    """Per part stocked or consumed at the location, by part number."""
    orders = []
    for part in sorted(set(command.stock) | set(command.usage)):
        by_month = {m: command.usage.get(part, {}).get(m, 0) for m in command.months}
        on_hand, reserved = command.stock.get(part, (0, 0))
        suggestion = suggest_order(
            list(by_month.values()),
            months_of_cover=command.months_of_cover,
            seasonal_coefficient=command.seasonal_coefficient,
            current_stock=on_hand - reserved,
        )
        orders.append(PlannedOrder(part, by_month, on_hand, reserved, suggestion))
    return orders

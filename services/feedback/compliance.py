"""The closed-loop checklist: seven rules, each a pure function of a ticket's facts
(``facts.py``), plus first-time fix.

Every item is ``"true"``, ``"false"`` or ``"pending"`` with the ids of the events that
decide it — or, for a ticket imported from the replaced system, ``"unknown"`` where the
old system kept no evidence (``imported_gaps``). "Pending" never depends on the wall clock: a deadline is missed only when an
event says so (an ``SlaBreached``, an ``OldPartReturnOverdue``, or any later event that
happened after the deadline with the step still missing). The projection, the auditor's
as-of view and the tests all run the same fold and rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from services.feedback.facts import Facts, PartEvent, Seen
from shared.kernel.events.tickets import FIXED_OUTCOMES, ResolutionPath
from shared.kernel.lifecycle import MOVES, TicketStatus, may_follow

TRUE, FALSE, PENDING = "true", "false", "pending"
# An imported ticket's item the replaced system kept no evidence of ("unknown (imported)").
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Item:
    status: str
    evidence: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "evidence": list(self.evidence), "note": self.note}


def verdict(met: bool) -> str:
    return TRUE if met else FALSE


def responded_within_sla(f: Facts) -> Item:
    """The first response (the first diagnosis call) within the urgency SLA, on the
    ticket's SLA clock (business time, pauses off: docs/sla.md)."""
    if f.first_response is not None:
        due = f.response_due_at
        met = due is None or f.first_response.at <= due
        note = "responded in time" if met else "responded after the deadline"
        return Item(verdict(met), (f.received_id, f.first_response.event_id), note)
    if (breach := f.breach("response")) is not None:
        return Item(FALSE, (f.received_id, breach), "SLA breached")
    if f.late_for_response is not None:
        note = "no response before a later event past the deadline"
        return Item(FALSE, (f.received_id, f.late_for_response), note)
    return Item(PENDING, (f.received_id,), "awaiting the first response")


def resolved_within_sla(f: Facts) -> Item:
    """The first repair within the resolution deadline of the diagnosis before it (on the
    ticket's SLA clock). A breach recorded before it stays a breach: a later diagnosis
    that moves the deadline (a higher complexity) does not make it in time."""
    first = f.repairs[0] if f.repairs else None
    if first is not None and first.breached_before is not None:
        note = "SLA breached before the repair"
        return Item(FALSE, (first.breached_before, first.event_id), note)
    if first is not None and first.diagnosis_id is not None:
        due = first.resolution_due_at
        met = due is None or first.at <= due
        note = "resolved in time" if met else "resolved after the deadline"
        return Item(verdict(met), (first.diagnosis_id, first.event_id), note)
    if first is not None:
        return Item(FALSE, (first.event_id,), "repaired without a diagnosis")
    if (breach := f.breach("resolution")) is not None:
        return Item(FALSE, (breach,), "SLA breached")
    if f.late_for_resolution is not None:
        note = "not resolved before a later event past the deadline"
        return Item(FALSE, (f.late_for_resolution,), note)
    return Item(PENDING, (), "not resolved yet")


def visited_before_repair(f: Facts) -> Item:
    """Every on-site repair had a visit since its latest dispatch."""
    on_site = [r for r in f.repairs if r.path is ResolutionPath.on_site]
    missing = tuple(r.event_id for r in on_site if r.visit_event_id is None)
    if missing:
        return Item(FALSE, missing, "on-site repair without a visit")
    visited = tuple(r.visit_event_id for r in on_site if r.visit_event_id is not None)
    if visited:
        return Item(TRUE, visited, "visited before the repair")
    if f.repairs:
        return Item(TRUE, tuple(r.event_id for r in f.repairs), "not an on-site repair")
    return Item(PENDING, (), "not repaired yet")


def follow_up_done(f: Facts) -> Item:
    """A follow-up after the (latest) repair; a close without one fails the item."""
    decided: Item | None = None
    awaiting: str | None = None
    followed = False
    for step in f.steps:
        if step.event_type == "TicketRepaired":
            awaiting = step.event_id
        elif step.event_type == "FollowUpRecorded":
            decided = (
                Item(TRUE, (awaiting, step.event_id), "after the repair")
                if awaiting is not None
                else Item(FALSE, (step.event_id,), "follow-up without a repair")
            )
            awaiting, followed = None, True
        elif step.event_type == "TicketClosed" and (awaiting is not None or not followed):
            decided = Item(FALSE, (step.event_id,), "closed without a follow-up")
    if decided is not None and decided.status == FALSE:
        return decided
    if awaiting is not None:
        return Item(PENDING, (awaiting,), "awaiting the follow-up")
    return decided or Item(PENDING, (), "not repaired yet")


def satisfied(f: Facts) -> Item:
    """The customer's latest word (a follow-up's verdict, or a complaint that reopened
    the ticket) is satisfactory."""
    if not f.words:
        return Item(PENDING, (), "no follow-up yet")
    word = f.words[-1]
    return Item(verdict(word.satisfactory), word.event_ids, word.note)


def parts_returned(f: Facts) -> Item:
    """Every old part the parts service expects back came back, none late. Part numbers
    match as the parts service normalises them; quantities are summed per part."""
    late = _grouped_by_part(f.late_parts)
    if late:
        return Item(FALSE, late, "returned late or overdue")
    expected = _expected_back(f)
    if not expected:
        if f.repairs:
            return Item(TRUE, tuple(r.event_id for r in f.repairs), "no old parts expected back")
        return Item(PENDING, (), "not repaired yet")
    outstanding = _outstanding(expected, f.returns)
    if outstanding:
        ids = tuple(e.event_id for e in expected if e.part_number in outstanding)
        return Item(PENDING, ids, f"awaiting return of {', '.join(sorted(outstanding))}")
    return Item(TRUE, tuple(r.event_id for r in f.returns), "all returned on time")


def steps_in_order(f: Facts) -> Item:
    """No lifecycle step skipped or out of order (the lifecycle table says which step
    may follow which); true once the ticket is closed."""
    wrong = [s for s in f.steps if s.event_type in MOVES and not step_allowed(s)]
    if wrong:
        note = "; ".join(f"{s.event_type} after {s.status_before.value}" for s in wrong)
        return Item(FALSE, tuple(s.event_id for s in wrong), note)
    if f.closed is not None:
        return Item(TRUE, (f.received_id, f.closed), "closed, every step in order")
    return Item(PENDING, (), "ticket still open")


def step_allowed(step: Seen) -> bool:
    """The lifecycle table's order; a repair without a visit only where none is needed
    (docs/feedback.md): remote guidance from its diagnosis, no on-site repair from a
    dispatch. Looser than the dispatch service, which asks a visit of a replacement too:
    the checklist also judges imported histories."""
    if not may_follow(step.status_before, step.event_type):
        return False
    if step.event_type != "TicketRepaired":
        return True
    if step.status_before is TicketStatus.diagnosed:
        return step.path is ResolutionPath.remote_guidance
    if step.status_before is TicketStatus.dispatched:
        return step.path not in (None, ResolutionPath.on_site)
    return True


def first_time_fix(f: Facts) -> Item:
    """The first repair fixed it at the first visit, and the ticket closed never reopened
    (``unknown`` where an imported history ended at the repair)."""
    return imported_gaps(f, {"first_time_fix": _first_time_fix(f)})["first_time_fix"]


def _first_time_fix(f: Facts) -> Item:
    if not f.repairs:
        return Item(PENDING, (), "not repaired yet")
    first = f.repairs[0]
    if f.reopens:
        return Item(FALSE, (first.event_id, f.reopens[0]), "reopened")
    if first.outcome not in FIXED_OUTCOMES:
        return Item(FALSE, (first.event_id,), f"first repair {first.outcome.value}")
    if first.visits_before > 1:
        return Item(FALSE, tuple(v.event_id for v in f.visits), "more than one visit")
    if f.closed is not None:
        return Item(TRUE, (first.event_id, f.closed), "fixed the first time")
    return Item(PENDING, (first.event_id,), "awaiting the follow-up")


Rule = Callable[[Facts], Item]

# The checklist, in the order it is shown.
RULES: dict[str, Rule] = {
    "responded_within_sla": responded_within_sla,
    "resolved_within_sla": resolved_within_sla,
    "visited_before_repair": visited_before_repair,
    "follow_up_done": follow_up_done,
    "satisfied": satisfied,
    "parts_returned": parts_returned,
    "steps_in_order": steps_in_order,
}
ITEMS: tuple[str, ...] = tuple(RULES)


def checklist(f: Facts) -> dict[str, Item]:
    return imported_gaps(f, {name: rule(f) for name, rule in RULES.items()})


def compliant(items: Iterable[Item]) -> str:
    statuses = {item.status for item in items}
    if FALSE in statuses:
        return FALSE
    if PENDING in statuses:
        return PENDING
    return UNKNOWN if UNKNOWN in statuses else TRUE


# Items an imported history that ends at a repair cannot settle: the replaced system kept
# no follow-up (a live follow-up settles them later).
AFTER_THE_REPAIR = ("follow_up_done", "satisfied", "steps_in_order", "first_time_fix")


def imported_gaps(f: Facts, items: dict[str, Item]) -> dict[str, Item]:
    """What the replaced system could not evidence, as ``unknown`` instead of a verdict it
    would otherwise get by default: the old-part returns of an imported repair that used
    parts (returns are not imported, so "nothing expected back" would be a guess), and the
    follow-up of an imported history that ended at its repair."""
    if not f.imported_through:
        return items
    imported = [r for r in f.repairs if r.version <= f.imported_through]
    out = dict(items)
    if (
        "parts_returned" in out
        and any(r.returns_possible for r in imported)
        and not (f.expected_returns or f.returns or f.late_parts)
    ):
        note = "imported: the replaced system's old-part returns are not in the ledger"
        out["parts_returned"] = Item(UNKNOWN, tuple(r.event_id for r in imported), note)
    last = f.repairs[-1] if f.repairs else None
    if (
        f.status is TicketStatus.repaired
        and last is not None
        and last.version <= f.imported_through
    ):
        note = "imported: the replaced system recorded no follow-up after the repair"
        for name in AFTER_THE_REPAIR:
            if name in out and out[name].status == PENDING:
                out[name] = Item(UNKNOWN, (last.event_id,), note)
    return out


def _grouped_by_part(events: tuple[PartEvent, ...]) -> tuple[str, ...]:
    """Event ids per part, parts in the order they first appear."""
    parts = dict.fromkeys(e.part_number for e in events)
    return tuple(e.event_id for part in parts for e in events if e.part_number == part)


def _expected_back(f: Facts) -> tuple[PartEvent, ...]:
    """The parts service's expected returns — and, where they expect fewer of a part than
    a live repair replaced under warranty (its reactor has yet to decide), those parts:
    they come back whatever the catalogue says (``return_expected``), so the checklist
    does not read "nothing expected" while the decision is on its way."""
    live = (r for r in f.repairs if r.version > f.imported_through)
    assumed = tuple(part for r in live for part in r.warranty_parts)
    decided, owed = _quantities(f.expected_returns), _quantities(assumed)
    short = {part for part, quantity in owed.items() if quantity > decided.get(part, 0)}
    kept = tuple(e for e in f.expected_returns if e.part_number not in short)
    return kept + tuple(e for e in assumed if e.part_number in short)


def _quantities(events: tuple[PartEvent, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for e in events:
        found[e.part_number] = found.get(e.part_number, 0) + e.quantity
    return found


def _outstanding(expected: tuple[PartEvent, ...], returned: tuple[PartEvent, ...]) -> set[str]:
    owed = _quantities(expected)
    for r in returned:
        if r.part_number in owed:
            owed[r.part_number] -= r.quantity
    return {part for part, quantity in owed.items() if quantity > 0}

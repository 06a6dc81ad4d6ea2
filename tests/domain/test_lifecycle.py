"""The ticket lifecycle table: complete, reachable, and the one source of every status."""

from __future__ import annotations

from collections import deque

from shared.kernel.events.registry import all_payload_classes
from shared.kernel.lifecycle import LIFECYCLE, MOVES, TicketStatus, may_follow, status_after


def test_every_ticket_event_type_has_a_row() -> None:
    """A new step of the ticket stream must say where it may happen (and where it leads):
    add its row to shared/kernel/lifecycle.py."""
    ticket_events = {
        name for name, cls in all_payload_classes().items() if cls.stream_type == "ticket"
    }
    assert ticket_events - set(LIFECYCLE) == set(), "ticket events without a lifecycle row"
    assert set(LIFECYCLE) - ticket_events == set(), "lifecycle rows for unknown events"


def test_every_status_is_reachable_from_new() -> None:
    seen = {TicketStatus.new}
    queue = deque([TicketStatus.new])
    while queue:
        status = queue.popleft()
        for name, step in MOVES.items():
            if may_follow(status, name) and step.to not in seen:
                assert step.to is not None
                seen.add(step.to)
                queue.append(step.to)
    assert seen == set(TicketStatus)


def test_every_step_can_happen_somewhere_reachable() -> None:
    for name, step in LIFECYCLE.items():
        assert step.after, f"{name} may follow no status"
        assert TicketStatus.new not in step.after or name == "TicketReceived"


def test_facts_leave_the_status_and_moves_set_it() -> None:
    assert status_after(TicketStatus.visited, "SlaBreached") is TicketStatus.visited
    assert status_after(TicketStatus.visited, "TicketRepaired") is TicketStatus.repaired
    assert status_after(TicketStatus.closed, "TicketReopened") is TicketStatus.reopened
    assert not may_follow(TicketStatus.closed, "TicketDiagnosed")
    assert not may_follow(TicketStatus.new, "ContactDetailsCorrected")

"""Imported history, given/when/then without a database: the import marker, opening
balances and usage history on a stock stream, and the checklist of an imported ticket
(``unknown`` where the replaced system kept no evidence)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.feedback import compliance
from services.feedback.compliance import PENDING, TRUE, UNKNOWN
from services.feedback.facts import Facts, amend
from services.parts import domain
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.parts import StockReceived, UsageHistoryRecorded
from shared.kernel.events.registry import upcast
from shared.kernel.events.tickets import UsedPart
from shared.kernel.imports import import_batch_of, imported_id
from tests.domain.test_compliance_rules import Ticket

AT = datetime(2025, 11, 30, 10, tzinfo=UTC)
BATCH = "01a2179c-7244-7257-befc-7f0a1cf2396c"


def test_an_imported_event_names_its_batch_as_correlation_and_cause() -> None:
    assert import_batch_of(SimpleNamespace(correlation_id=BATCH, causation_id=BATCH)) == BATCH
    # A command (no cause) and a reaction (caused by an event of the batch) are not imports.
    assert import_batch_of(SimpleNamespace(correlation_id=BATCH, causation_id=None)) is None
    reaction = SimpleNamespace(
        correlation_id=BATCH, causation_id="01a2179c-0000-7000-8000-000000000001"
    )
    assert import_batch_of(reaction) is None
    assert (
        imported_id("ticket", "OLD-1")
        == imported_id("ticket", "OLD-1")
        != imported_id("ticket", "OLD-2")
    )


def stock() -> domain.StockLevel:
    return domain.STOCK_LEVELS.initial_state("stock:sp-1:MOTOR")


def test_an_opening_balance_is_a_marked_receipt_once_before_any_movement() -> None:
    command = domain.RecordOpeningBalance(7, AT, catalogued=True, reference="stock-take")
    (event,) = domain.decide_opening_balance(command, stock())
    assert isinstance(event.payload, StockReceived) and event.payload.opening_balance
    assert event.occurred_at == AT
    after = domain.evolve_stock(stock(), event.payload)
    assert after.on_hand == 7 and after.opening_balance == 7
    with pytest.raises(RuleViolation, match="opening_balance_recorded"):
        domain.decide_opening_balance(command, after)
    moved = domain.evolve_stock(
        stock(), StockReceived(location_id="sp-1", part_number="MOTOR", quantity=1)
    )
    with pytest.raises(RuleViolation, match="stock_already_moved"):
        domain.decide_opening_balance(command, moved)
    assert domain.decide_opening_balance(replace(command, quantity=0), stock()) == []
    with pytest.raises(InvalidCommand):
        domain.decide_opening_balance(replace(command, catalogued=False), stock())
    # Receipts recorded before opening balances existed read as deliveries.
    assert upcast("StockReceived", 1, {"quantity": 1})["opening_balance"] is False


def test_usage_history_is_for_past_months_once_each_and_moves_no_stock() -> None:
    command = domain.RecordUsageHistory("2025-10", 12, current_month="2025-12", catalogued=True)
    (event,) = domain.decide_usage_history(command, stock())
    assert isinstance(event.payload, UsageHistoryRecorded)
    assert event.occurred_at == datetime(2025, 10, 1, tzinfo=UTC)
    after = domain.evolve_stock(stock(), event.payload)
    assert after.usage_months == {"2025-10": 12} and after.on_hand == 0 and not after.moved
    with pytest.raises(RuleViolation, match="usage_history_recorded"):
        domain.decide_usage_history(command, after)
    with pytest.raises(InvalidCommand, match="before the current one"):
        domain.decide_usage_history(replace(command, month="2025-12"), stock())
    # History does not count as a movement: the opening balance may follow it.
    balance = domain.RecordOpeningBalance(3, AT, catalogued=True)
    assert domain.decide_opening_balance(balance, after)


def imported(ticket: Ticket) -> Facts:
    facts = ticket.facts
    return amend(facts, imported_through=facts.version)


def test_an_imported_history_ending_at_its_repair_is_unknown_after_it() -> None:
    t = Ticket()
    t.through_repair()
    live = t.facts
    assert compliance.follow_up_done(live).status == PENDING
    items = compliance.checklist(imported(t))
    for name in ("follow_up_done", "satisfied", "steps_in_order"):
        assert items[name].status == UNKNOWN and items[name].note.startswith("imported:")
    assert compliance.first_time_fix(imported(t)).status == UNKNOWN
    assert items["resolved_within_sla"].status == TRUE  # evidenced: stays a verdict
    assert compliance.compliant(items.values()) == UNKNOWN


def test_old_part_returns_of_an_imported_repair_are_unknown() -> None:
    t = Ticket()
    t.through_repair(UsedPart(part_number="MOTOR", under_warranty=True))
    t.at(30).follow_up()
    assert compliance.parts_returned(t.facts).status == PENDING  # live: owed from the repair
    items = compliance.checklist(imported(t))
    assert items["parts_returned"].status == UNKNOWN
    assert items["follow_up_done"].status == TRUE and items["steps_in_order"].status == TRUE
    # A live follow-up after the import settles what the history could not.
    t2 = Ticket()
    t2.through_repair()
    facts = amend(t2.facts, imported_through=t2.facts.version)
    t2.at(30).follow_up()
    later = amend(t2.facts, imported_through=facts.imported_through)
    assert compliance.checklist(later)["follow_up_done"].status == TRUE


async def test_an_interrupted_pass_counts_the_batch_the_database_committed() -> None:
    """Ctrl-C while the database works on a batch: that batch commits in its own time, and
    is counted before the pass stops, so the summary says what the ledger holds."""
    import asyncio

    from shared.app.importing.engine import _Batch, pipelined

    committed: list[int] = []
    counted: list[int] = []

    async def send(batch: _Batch) -> list[Any]:
        await asyncio.sleep(0.2)  # the database at work
        committed.append(batch.last_line)
        return []

    def done(batch: _Batch, _verdicts: list[Any]) -> None:
        counted.append(batch.last_line)

    batches = (_Batch(rows=1, last_line=n, parsed=[], invalid=0, problems=[]) for n in (1, 2, 3))
    passing = asyncio.create_task(pipelined(batches, send, done))
    await asyncio.sleep(0.3)  # the first batch counted, the second in the database
    passing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await passing
    assert counted == committed == [1, 2]

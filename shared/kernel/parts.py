"""Spare-part rules more than one service asks: what a part number is, and which replaced
parts must come back (DOMAIN.md: "100 % of parts replaced under warranty must be
returned"). The parts service decides expected returns with ``return_expected``; the
compliance checklist reads those decisions and matches returns by ``normalise_part_number``,
so both always agree."""

from __future__ import annotations

from shared.kernel.events.tickets import CostBearer, UsedPart


def normalise_part_number(value: str) -> str:
    """Part numbers compare case-insensitively, without surrounding spaces."""
    return value.strip().upper()


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def normalise_serial_number(value: str) -> str:
    """A product's serial number compares without case: ``sn-0001`` is ``SN-0001``. ASCII
    letters only, as SQLite's ``upper()`` folds them (``ix_ticket_state_serial_key`` indexes
    that expression), so that Python and the database agree on every serial."""
    return value.strip().translate(_ASCII_UPPER)


def old_serial_key(value: str | None) -> str | None:
    """An old part's serial as compared (``normalise_serial_number``), None when not given."""
    return normalise_serial_number(value) if value else None


def ticket_parts_stream(ticket_id: str) -> str:
    """The parts paperwork of one ticket (expected old-part returns, unmatched usage):
    written by the parts service, read by the compliance checklist."""
    return f"tparts:{ticket_id}"


def return_expected(line: UsedPart, cost_borne_by: CostBearer, catalogue_requires: bool) -> bool:
    """Whether the old part of a used-part line must be returned: the technician marked it
    replaced under warranty, or the warranty bore the repair's cost and the catalogue says
    the part comes back."""
    return line.under_warranty or (cost_borne_by is CostBearer.warranty and catalogue_requires)

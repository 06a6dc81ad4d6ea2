"""Steering SQLite's planner, which has no statistics: between an index on a broad column
(a region's, a status's tickets) that also gives a query's order and a narrow condition
(a customer's, a technician's, a list of ids), it takes the broad walk — every ticket of
the region, for a handful of rows. A broad column compared through ``not_by_index`` is no
way in, so the narrow condition is (PostgreSQL plans by its statistics either way)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer
from sqlalchemy.sql.elements import ColumnElement


def not_by_index(column: Any) -> ColumnElement[Any]:
    """``column`` as an expression of the same value that no index serves: a number's
    ``+ 0``, a text's ``|| ''``."""
    return column + (0 if isinstance(column.type, Integer) else "")  # type: ignore[no-any-return]


def checked_only_if(narrower_given: bool, column: Any) -> Any:
    """``column`` kept out of the plan (``not_by_index``) when a narrower condition is
    given, so that one leads and this one is only checked on its rows."""
    return not_by_index(column) if narrower_given else column

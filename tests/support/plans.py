"""Query plans on SQLite: which statements read a big table by a full pass or sort it in
memory (what a page must never do once the table is large)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import Engine


@contextmanager
def recorded_selects(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (with their parameters) run on ``engine`` inside the block."""
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explained(conn: Connection, statement: str, parameters: Any) -> list[str]:
    """The details of the statement's query plan, one line per step."""
    plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return [str(row[-1]) for row in plan]


def plan_problems(
    conn: Connection,
    statements: Sequence[tuple[str, Any]],
    big: Sequence[str],
    unsorted: Sequence[str] = (),
    bounded: Sequence[str] = (),
) -> list[str]:
    """Each statement's plan: a ``big`` table scanned other than by an ordered index walk
    that stops at a LIMIT, or an ``unsorted`` table sorted in memory — unless the plan
    seeks one of the ``bounded`` indexes (a technician's tickets: a handful) —, is a
    problem."""
    problems = []
    for statement, parameters in statements:
        if "sqlite_master" in statement or statement.strip() == "SELECT 1":
            continue
        plan = explained(conn, statement, parameters)
        small = any(f"INDEX {index} " in detail for detail in plan for index in bounded)
        for detail in plan:
            scanned = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX)?", detail)
            # The events table's rowid is its position: walking it in order is such a walk.
            in_order = scanned and (
                scanned.group(2)
                or (scanned.group(1) == "events" and "BY events.position" in statement)
            )
            walk = in_order and "LIMIT" in statement
            if scanned and scanned.group(1) in big and not walk:
                problems.append(f"{detail}\n  in {statement}")
            # The outer query's table ("(": a page merged from subqueries' walks).
            sorted_table = re.search(r"FROM (\(|\w+)", statement)
            if (
                "TEMP B-TREE FOR ORDER BY" in detail
                and not small
                and sorted_table
                and sorted_table.group(1) in unsorted
            ):
                problems.append(f"{detail}\n  in {statement}")
    return problems

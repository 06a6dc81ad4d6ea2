"""The schema comes from Alembic only, matches the code's table definitions, and
migrating twice changes nothing."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.app.registry import SERVICES, app_factory
from shared.eventstore.db import Database, ensure_sqlite_dir, metadata
from shared.eventstore.migrations import schema_is_current, upgrade


# SQLite cannot reflect the expression index on upper(serial_number): compared on PostgreSQL.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
async def test_migrations_match_table_definitions(database_url: str) -> None:
    for service in SERVICES:  # importing the apps imports every table definition
        app_factory(service)
    upgrade(database_url)  # a second run on a current schema is a no-op
    assert await schema_is_current(database_url)
    db = Database(database_url)
    try:

        def diff(conn):  # type: ignore[no-untyped-def]
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            return compare_metadata(context, metadata)

        differences = await db.read(diff)
    finally:
        await db.dispose()
    relevant = [
        d
        for d in differences
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
    ]
    assert relevant == []


async def test_fresh_database_is_not_current(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/empty.db"
    ensure_sqlite_dir(url)
    assert not await schema_is_current(url)
    upgrade(url)
    assert await schema_is_current(url)


async def test_a_migration_cut_short_is_undone_whole(tmp_path) -> None:
    """A migration stopped after some of its statements (a kill mid-way): on SQLite each
    CREATE committed on its own, the revision was not recorded, and every later start
    failed on a table that already existed. Now the next run starts it again."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    url = f"sqlite+aiosqlite:///{tmp_path}/cut.db"

    def cut(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        # The network migration's second table: its first already created.
        if "CREATE TABLE dispatch_technicians" in statement:
            raise RuntimeError("killed")

    event.listen(Engine, "before_cursor_execute", cut)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            await asyncio.to_thread(upgrade, url)
    finally:
        event.remove(Engine, "before_cursor_execute", cut)
    await asyncio.to_thread(upgrade, url)
    assert await schema_is_current(url)


async def test_staff_counts_are_filled_from_the_rows_facts(database_url: str) -> None:
    """Migration 0403 fills the staff KPIs' counts from each row's ``facts`` by the
    projection's rule (``staff_counts``), 0406 each technician's work on the ticket
    (``technician_work_rows``): visits and repairs of the row's technician only,
    every follow-up, every correction — checked on rows written before it, after a
    downgrade to 0402 (both dialects' JSON functions)."""
    import asyncio
    import json
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import insert, select

    from services.feedback.tables import (
        STAFF_COUNTS,
        TALLY_COLUMNS,
        TECHNICIAN_WORK,
        compliance_tickets,
        technician_work,
    )
    from shared.eventstore.migrations import alembic_config

    app_factory("feedback")
    await asyncio.to_thread(
        command.downgrade, alembic_config(database_url), "0402_feedback_tallies"
    )
    rows, expected = [], {}
    work: dict[tuple[str, str], tuple[int, ...]] = {}
    for n in range(12):
        tech = None if n % 4 == 0 else f"t-{n % 3}"
        visits = [
            {"technician_id": f"t-{(n + k) % 3}", "on_time": (n + k) % 2 == 0} for k in range(n % 4)
        ]
        repairs = [
            {
                "event_id": f"r-{n}-{k}",
                "technician_id": f"t-{(n + k) % 3}" if k or n % 2 else None,
                "parts_as_expected": k % 2 == 1,
            }
            for k in range(n % 3)
        ]
        follow_ups = [
            {"score": 40 + 7 * k + n, "would_recommend": k, "repair_event_id": f"r-{n}-{k}"}
            for k in range(n % 3)
        ]
        first_time_fix = ("true", "false", "pending")[n % 3]
        facts = {
            "complaints": [],
            "corrections": [f"c{k}" for k in range(n % 2)],
            "deductions": [],
            "follow_ups": follow_ups,
            "repairs": repairs,
            "visits": visits,
        }
        ticket_id = f"00000000-0000-0000-0000-{n:012d}"
        rows.append(
            {
                "ticket_id": ticket_id,
                "ticket_number": f"TL-{n:04d}",
                "region": "east",
                "month": "2026-11",
                "received_at": datetime(2026, 11, 1, tzinfo=UTC),
                "product_model": "WM-700",
                "technician_id": tech,
                "status": "closed",
                **dict.fromkeys(TALLY_COLUMNS, "true"),
                "first_time_fix": first_time_fix,
                "checklist": "{}",
                "facts": json.dumps(facts, separators=(",", ":"), sort_keys=True),
                "version": 1,
            }
        )
        mine_visits = [v for v in visits if tech and v["technician_id"] == tech]
        mine_repairs = [r for r in repairs if tech and r["technician_id"] == tech]
        expected[ticket_id] = {
            "technician_visits": len(mine_visits),
            "technician_visits_on_time": sum(1 for v in mine_visits if v["on_time"]),
            "technician_repairs": len(mine_repairs),
            "technician_repairs_as_expected": sum(
                1 for r in mine_repairs if r["parts_as_expected"]
            ),
            "follow_up_count": len(follow_ups),
            "follow_up_score_total": sum(f["score"] for f in follow_ups),
            "corrections": len(facts["corrections"]),
        }
        # 0406: every technician's own visits and repairs on the ticket.
        for tech_of_work in {w["technician_id"] for w in [*visits, *repairs]} - {None}:
            its_visits = [v for v in visits if v["technician_id"] == tech_of_work]
            its_repairs = [r for r in repairs if r["technician_id"] == tech_of_work]
            # 0407: the first repair's first-time fix, the follow-ups of its repairs.
            first = bool(repairs) and repairs[0]["technician_id"] == tech_of_work
            decided = first and first_time_fix in ("true", "false")
            made = {r["event_id"] for r in its_repairs}
            rated = [f["score"] for f in follow_ups if f["repair_event_id"] in made]
            work[(ticket_id, tech_of_work)] = (
                len(its_visits),
                sum(1 for v in its_visits if v["on_time"]),
                len(its_repairs),
                sum(1 for r in its_repairs if r["parts_as_expected"]),
                int(decided),
                int(decided and first_time_fix == "true"),
                len(rated),
                sum(rated),
            )
    assert any(e["technician_visits"] for e in expected.values())
    db = Database(database_url)
    try:
        # At 0402 the table has no staff counts: the insert names only the columns it has.
        await db.write(lambda conn: conn.execute(insert(compliance_tickets), rows))
        await asyncio.to_thread(upgrade, database_url)
        t = compliance_tickets.c
        query = select(t.ticket_id, *(t[name] for name in STAFF_COUNTS))
        found = await db.read(lambda conn: list(conn.execute(query)))
        w = technician_work.c
        worked = select(w.ticket_id, w.technician_id, *(w[n] for n in TECHNICIAN_WORK))
        found_work = await db.read(lambda conn: list(conn.execute(worked)))
    finally:
        await db.dispose()
    assert {row.ticket_id: dict(row._mapping) for row in found} == {
        ticket_id: {"ticket_id": ticket_id, **counts} for ticket_id, counts in expected.items()
    }
    assert {(r[0], r[1]): tuple(r[2:]) for r in found_work} == work
    assert any(w[4] for w in work.values()) and any(w[6] for w in work.values())


def test_every_revision_id_fits_alembic_version() -> None:
    """``alembic_version.version_num`` is VARCHAR(32): PostgreSQL refuses a longer id (SQLite
    stores it), so a long name would pass on SQLite and break every PostgreSQL migration."""
    from alembic.script import ScriptDirectory

    from shared.eventstore.migrations import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    long = [s.revision for s in scripts.walk_revisions() if len(s.revision) > 32]
    assert not long, long

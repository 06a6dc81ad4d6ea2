"""The schema comes from Alembic only, matches the code's table definitions, and
migrating twice changes nothing."""

from __future__ import annotations

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

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.eventstore.db import async_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _transactional_ddl(engine: AsyncEngine) -> None:
    """SQLite's DDL in the migration's transaction: the sqlite3 module opens a transaction
    before DML only, so each CREATE committed on its own — a migration cut short (a kill)
    left tables its recorded revision did not have, and every later start failed on them."""

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _main() -> None:
    engine = async_engine(config.attributes["database_url"])
    if engine.dialect.name == "sqlite":
        _transactional_ddl(engine)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `ticketline migrate`")
asyncio.run(_main())

"""Alembic migrations: the only way the schema is created or changed.

The core revisions live in ``shared/eventstore/migrations/versions``; each service keeps its own
tables' revisions in ``services/<name>/migrations`` as a branch that depends on the core,
so ``upgrade heads`` brings every branch up to date.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from shared.eventstore.db import async_engine

HERE = Path(__file__).resolve().parent
SERVICES = HERE.parents[2] / "services"


def version_locations() -> list[str]:
    locations = [str(HERE / "versions")]
    locations += sorted(str(p) for p in SERVICES.glob("*/migrations") if p.is_dir())
    return locations


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    # Space-separated; paths here contain no spaces.
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Bring the schema up to date. Safe to run twice: a current schema is left as is.

    Alembic's env runs its own event loop, so from inside a running loop the upgrade
    runs in a helper thread."""
    if database_url.startswith("sqlite"):
        from shared.eventstore.db import ensure_sqlite_dir

        ensure_sqlite_dir(database_url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(alembic_config(database_url), revision)
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            command.upgrade(alembic_config(database_url), revision)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


async def current_revisions(database_url: str) -> set[str]:
    engine = async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: set(MigrationContext.configure(sync).get_current_heads())
            )
    finally:
        await engine.dispose()


async def schema_is_current(database_url: str) -> bool:
    """True when ``upgrade heads`` would do nothing. Branch heads that another branch
    depends on are not stored in alembic_version, so the plan is asked, not the heads."""
    return _plan_is_empty(database_url, await current_revisions(database_url))


async def pending_revisions(database_url: str) -> list[str]:
    """The revisions ``upgrade heads`` would apply, in the order it would."""
    if database_url.startswith("sqlite"):
        from shared.eventstore.db import ensure_sqlite_dir

        ensure_sqlite_dir(database_url)
    current = await current_revisions(database_url)
    steps = _scripts(database_url)._upgrade_revs("heads", tuple(current))  # type: ignore[arg-type]
    return [step.revision.revision for step in steps]


def schema_is_current_on(conn: Connection) -> bool:
    """``schema_is_current`` on an open connection (a unit of work: no engine of its own)."""
    current = set(MigrationContext.configure(conn).get_current_heads())
    return _plan_is_empty(str(conn.engine.url), current)


def _plan_is_empty(database_url: str, current: set[str]) -> bool:
    script = _scripts(database_url)
    # Alembic's own planner (typed as taking one revision; it takes the tuple of heads).
    return not script._upgrade_revs("heads", tuple(current))  # type: ignore[arg-type]


_SCRIPTS: dict[str, ScriptDirectory] = {}


def _scripts(database_url: str) -> ScriptDirectory:
    # The revision files do not change while a process runs: read them once.
    found = _SCRIPTS.get("")
    if found is None:
        found = _SCRIPTS[""] = ScriptDirectory.from_config(alembic_config(database_url))
    return found

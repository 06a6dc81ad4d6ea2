"""Real components for the tests: SQLite files, a throwaway PostgreSQL cluster and the
Kafka-protocol test broker, all on this machine's loopback."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.app.config import Settings
from shared.app.platform import Platform
from shared.eventstore.db import Database
from shared.eventstore.ledger import EventStore
from shared.eventstore.migrations import upgrade
from shared.kernel.clock import ManualClock
from tests.support.auth import TEST_AUTH, TEST_AUTH_ENV
from tests.support.broker import TestBroker
from tests.support.clients import service_client
from tests.support.lifecycle import Lifecycle
from tests.support.postgres import PostgresCluster

BACKENDS = ["sqlite", "postgres"]

# Any Settings a test builds (and any CLI it starts) verifies the tokens headers_for mints.
for _name, _value in TEST_AUTH_ENV.items():
    os.environ.setdefault(_name, _value)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): a worker per core, at most four — each starts its
    own PostgreSQL cluster, and the longest test (about two minutes) bounds the gain."""
    return max(1, min(os.cpu_count() or 1, 4))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PostgresCluster) -> str:
    pg_cluster.psql("CREATE DATABASE tl_template")
    upgrade(pg_cluster.url("tl_template"))
    return "tl_template"


async def fresh_database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A migrated, empty database of the given backend, copied from a template."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / f"ticketline-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    template_name = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    await engine.dispose()
    return cluster.url(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    return await fresh_database_url(request, backend, tmp_path)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> EventStore:
    return EventStore(clock=clock)


@pytest.fixture
def broker() -> Iterator[TestBroker]:
    b = TestBroker()
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def platform(
    database_url: str, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[Platform]:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", auth=TEST_AUTH)
    p = Platform.from_settings(settings, clock=clock)
    yield p
    await p.close()


@pytest.fixture
async def intake(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("intake", platform) as client:
        yield client


@pytest.fixture
async def dispatch(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("dispatch", platform) as client:
        yield client


@pytest.fixture
async def parts(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("parts", platform) as client:
        yield client


@pytest.fixture
async def feedback(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("feedback", platform) as client:
        yield client


@pytest.fixture
def life(platform: Platform, intake: httpx.AsyncClient, clock: ManualClock) -> Lifecycle:
    return Lifecycle(platform, intake, clock)


@pytest.fixture
async def auditor(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The feedback service, called by an auditor."""
    async with service_client("feedback", platform, role="auditor") as client:
        yield client

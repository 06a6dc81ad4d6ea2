"""The services' periodic jobs (shared/app/jobs.py): one pass per interval in the process
holding the job's lease; a failed pass does not end the job; the lease is given back when
the job stops, so a replica takes over at once."""

from __future__ import annotations

import asyncio

import pytest

from shared.app.jobs import run_leased
from shared.eventstore.db import Database
from shared.eventstore.leases import Lease
from shared.kernel.clock import ManualClock


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_job_survives_a_failed_pass_and_gives_its_lease_back_when_it_stops(
    db: Database, clock: ManualClock
) -> None:
    passes: list[int] = []
    stop = asyncio.Event()

    async def one_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("the first pass fails")
        if len(passes) == 3:
            stop.set()

    lease = Lease(db, "a-job", "replica-a", 3600, clock)
    await asyncio.wait_for(run_leased(lease, stop, 0.01, one_pass), 10)
    assert passes == [0, 1, 2]
    # Within the hour the lease would still run, another replica holds it now.
    assert await Lease(db, "a-job", "replica-b", 3600, clock).acquire()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_job_runs_no_pass_while_another_replica_holds_its_lease(
    db: Database, clock: ManualClock
) -> None:
    assert await Lease(db, "a-job", "replica-b", 3600, clock).acquire()
    stop = asyncio.Event()
    passes: list[str] = []

    async def one_pass() -> None:
        passes.append("ran")

    job = asyncio.create_task(
        run_leased(Lease(db, "a-job", "replica-a", 3600, clock), stop, 0.01, one_pass)
    )
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(job, 10)
    assert passes == []
    # Stopping gave back nothing it did not hold.
    assert not await Lease(db, "a-job", "replica-c", 3600, clock).acquire()

"""The services' periodic jobs (shared/app/jobs.py): one pass per interval in the process
holding the job's lease; a failed pass does not end the job; the lease is given back when
the job stops, so a replica takes over at once."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from prometheus_client import REGISTRY

from shared.app.jobs import run_leased
from shared.eventstore.db import Database
from shared.eventstore.leases import Lease, process_host
from shared.eventstore.outbox import relay_owner_id
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

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"job": "a-job"}) or 0.0

    before = (
        sample("ticketline_job_pass_seconds_count"),
        sample("ticketline_job_pass_failures_total"),
    )
    lease = Lease(db, "a-job", "replica-a", 3600, clock)
    await asyncio.wait_for(run_leased(lease, stop, 0.01, one_pass), 10)
    assert passes == [0, 1, 2]
    # On /metrics: each pass timed (the failed one too), the failure counted.
    after = (
        sample("ticketline_job_pass_seconds_count"),
        sample("ticketline_job_pass_failures_total"),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    # Within the hour the lease would still run, another replica holds it now.
    assert await Lease(db, "a-job", "replica-b", 3600, clock).acquire()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_job_runs_no_pass_while_another_replica_holds_its_lease(
    db: Database, clock: ManualClock
) -> None:
    assert await Lease(db, "b-job", "replica-b", 3600, clock).acquire()
    stop = asyncio.Event()
    passes: list[str] = []

    async def one_pass() -> None:
        passes.append("ran")

    job = asyncio.create_task(
        run_leased(Lease(db, "b-job", "replica-a", 3600, clock), stop, 0.01, one_pass)
    )
    await asyncio.sleep(0.1)
    # Its failures are on /metrics from the start, at 0 (an alert reads 0, not "no data").
    assert REGISTRY.get_sample_value("ticketline_job_pass_failures_total", {"job": "b-job"}) == 0
    stop.set()
    await asyncio.wait_for(job, 10)
    assert passes == []
    # Stopping gave back nothing it did not hold.
    assert not await Lease(db, "b-job", "replica-c", 3600, clock).acquire()


async def test_a_lease_held_by_a_killed_process_of_this_host_is_taken_at_once_on_sqlite(
    db: Database, clock: ManualClock
) -> None:
    """A crash leaves the dead process's leases behind: on SQLite (one host's file) a
    restarted process takes them at once, not after their term (15 minutes for the
    checkpoints). Elsewhere, or while the holder runs, the term stands."""
    dead_pid = _ended_pid()
    host = process_host()
    for name, holder in (
        ("dead-here", f"{host}:{dead_pid}:abcd1234"),
        ("alive-here", f"{host}:{os.getppid()}:abcd1234"),
        ("elsewhere", f"another-host:{dead_pid}:abcd1234"),
    ):
        assert await Lease(db, name, holder, 3600, clock).acquire()
    taken = {
        name: await Lease(db, name, relay_owner_id(), 3600, clock).acquire()
        for name in ("dead-here", "alive-here", "elsewhere")
    }
    on_sqlite = db.dialect == "sqlite"
    assert taken == {"dead-here": on_sqlite, "alive-here": False, "elsewhere": False}


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])  # noqa: S607
    process.wait()
    return process.pid


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_pass_longer_than_the_lease_keeps_it(db: Database, clock: ManualClock) -> None:
    """The lease is renewed while a pass runs: a pass past one term (an SLA pass over an
    import's backlog) let another replica take the job and start the same pass beside it."""
    stop = asyncio.Event()
    others: list[bool] = []

    async def one_pass() -> None:
        for _ in range(4):  # four lease terms go by on the clock, renewals in between
            clock.advance(seconds=0.3)
            await asyncio.sleep(0.25)
            others.append(await Lease(db, "a-job", "replica-b", 0.3, clock).acquire())
        stop.set()

    lease = Lease(db, "a-job", "replica-a", 0.3, clock)
    await asyncio.wait_for(run_leased(lease, stop, 0.01, one_pass), 10)
    assert others == [False] * 4

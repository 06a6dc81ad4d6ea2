"""The services' periodic jobs: one pass every interval, in the one process holding the
job's lease (any number of replicas may run the loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram

from shared.eventstore.db import is_outage
from shared.eventstore.leases import Lease
from shared.kernel.events.registry import UnreadableEvent

log = logging.getLogger(__name__)

JOB_PASS_SECONDS = Histogram(
    "ticketline_job_pass_seconds",
    "How long each pass of a periodic job took in this process (the one holding its "
    "lease), failed ones too: a pass nearing its interval or its lease wants attention.",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300),
)
JOB_PASS_FAILURES = Counter(
    "ticketline_job_pass_failures",
    "Passes of a periodic job that failed in this process (retried at the next interval).",
    ["job"],
)


class FailureReport:
    """How a loop (a projector, a job) logs a failure before it tries again: a database
    outage as one warning per ``quiet_seconds``, without a traceback (it says nothing of
    the work: docs/operations.md); a damaged stored event, each time, naming its position;
    anything else, each time, with its traceback."""

    def __init__(
        self,
        what: str,
        quiet_seconds: float = 30.0,
        *,
        failed: str = "restarting in 1 s",
        again: str = "trying again every second",
    ) -> None:
        self.what, self.quiet_seconds = what, quiet_seconds
        self.failed, self.again = failed, again
        self._quiet_until = 0.0

    def report(self, exc: Exception) -> None:
        if isinstance(exc, UnreadableEvent):  # the position says it all: no traceback
            log.error("%s failed; %s: %s", self.what, self.failed, exc)
            return
        if not is_outage(exc):
            log.error("%s failed; %s", self.what, self.failed, exc_info=exc)
            return
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + self.quiet_seconds
            log.warning("%s: the database is unavailable (%s); %s", self.what, exc, self.again)


async def run_leased(
    lease: Lease,
    stop: asyncio.Event,
    interval_seconds: float,
    one_pass: Callable[[], Awaitable[object]],
) -> None:
    """Until ``stop``: a failed pass is logged and the next interval tries again; the
    lease is given back on the way out, so another replica takes the job over at once
    instead of when the lease expires."""
    failures = FailureReport(
        f"job {lease.name}",
        failed="retrying at the next interval",
        again="trying again at the next interval",
    )
    # Shown at 0 from the start: an alert on its increase reads 0, not "no data".
    JOB_PASS_FAILURES.labels(lease.name)
    try:
        while not stop.is_set():
            try:
                if await lease.acquire():
                    async with lease.kept():
                        with JOB_PASS_SECONDS.labels(lease.name).time():
                            await one_pass()
            except Exception as exc:
                JOB_PASS_FAILURES.labels(lease.name).inc()
                failures.report(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
    finally:
        with contextlib.suppress(Exception):
            await lease.release()

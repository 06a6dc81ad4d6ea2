"""The services' periodic jobs: one pass every interval, in the one process holding the
job's lease (any number of replicas may run the loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.eventstore.leases import Lease

log = logging.getLogger(__name__)


async def run_leased(
    lease: Lease,
    stop: asyncio.Event,
    interval_seconds: float,
    one_pass: Callable[[], Awaitable[object]],
) -> None:
    """Until ``stop``: a failed pass is logged and the next interval tries again; the
    lease is given back on the way out, so another replica takes the job over at once
    instead of when the lease expires."""
    try:
        while not stop.is_set():
            try:
                if await lease.acquire():
                    await one_pass()
            except Exception:
                log.exception("job %s: pass failed; retrying at the next interval", lease.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
    finally:
        with contextlib.suppress(Exception):
            await lease.release()

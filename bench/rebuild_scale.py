"""The ticket_state rebuild at scale, in a process of its own so its peak memory (max RSS)
is its own: the same rebuild on a ledger ten times larger must not need ten times the
memory (pages are streamed, rows folded per page).

    python -m bench.rebuild_scale sqlite+aiosqlite:////tmp/x.db   # prints JSON
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from typing import Any

from bench.limits import raw_read_and_decode


async def _rebuild(url: str) -> dict[str, Any]:
    from shared.app.config import Settings
    from shared.app.platform import Platform
    from shared.readmodels.ticket_state import TicketStateProjection

    platform = Platform.from_settings(Settings(database_url=url))
    try:
        started = time.perf_counter()
        stats = await platform.runner.rebuild(TicketStateProjection())
        seconds = time.perf_counter() - started
    finally:
        await platform.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"events": stats.applied, "seconds": seconds, "max_rss_mb": peak_kb / 1024}


def rebuild_in_subprocess(url: str) -> dict[str, Any]:
    """Rebuild ``ticket_state`` of the database at ``url`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.rebuild_scale", url],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def raw_rate(url: str) -> float:
    raw = await raw_read_and_decode(url)
    return raw.count / raw.seconds if raw.seconds else 0.0


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_rebuild(sys.argv[1]))))

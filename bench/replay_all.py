"""An auditor's ``ticketline replay`` of every projection, in a process of its own, on the
console section's history (an imported ledger of N tickets through their whole
lifecycle, every read model caught up): what the CLI reports for each projection, and
the whole command's wall time (start, the copy of the ledger into the scratch database,
the rebuilds and the comparisons with the live tables) beside a raw read + ``orjson``
decode of the same ``events`` table (bench/limits.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.imports import cli_env
from bench.limits import raw_read_and_decode
from bench.measure import Result


def cli_replay(data_dir: Path) -> tuple[list[dict[str, Any]], float]:
    """``ticketline replay --quiet`` of every projection: its JSON lines (the projections'
    then the summary) and its wall seconds."""
    command = [sys.executable, "-m", "shared.app.cli", "replay", "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(
        command, env=cli_env(data_dir), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    # Exit 1 with a summary: the replay ran and found differences (the report says so).
    if done.returncode not in (0, 1) or not lines or "summary" not in lines[-1]:
        raise RuntimeError(f"ticketline replay exited with {done.returncode}: {done.stderr[-500:]}")
    return lines, seconds


async def bench_replay_all(report: Any, data_dir: Path, tickets: int) -> None:
    """The report section: one row per projection, the command's wall time beside the raw
    read of the ledger it replays."""
    lines, seconds = await asyncio.to_thread(cli_replay, data_dir)
    summary = lines[-1]
    ledger = f"sqlite+aiosqlite:///{data_dir}/ticketline.db"
    raw = await raw_read_and_decode(ledger)
    section = report.section(
        f"ticketline replay of every projection ({tickets:,} tickets, {raw.count:,} events; "
        "the console's history; CLI in its own process)",
        reference_header="limit",
    )
    identical = "identical to live" if summary["identical_to_live"] else "DIFFERENCES from live"
    section.compare(
        "whole command: ledger events per wall second",
        Result(raw.count, seconds),
        raw,
        unit="events/s",
        note=f"{seconds:.1f} s in all ({summary['seconds']:.1f} s rebuilding), {identical}; "
        "limit: raw read + orjson.loads of the same events table",
    )
    for line in lines[:-1]:
        if line["events"]:
            section.add(
                f"  {line['projection']}",
                line["events_per_second"],
                None,
                unit="events/s",
                note=f"{line['events']:,} events in {line['seconds']:.2f} s",
            )

"""An auditor's ``ticketline replay`` of every projection, in a process of its own, on the
console section's history (an imported ledger of N tickets through their whole
lifecycle, every read model caught up): what the CLI reports for each projection, and
the whole command's wall time (start, the copy of the ledger into the scratch database,
the rebuilds and the comparisons with the live tables) beside a raw read + ``orjson``
decode of the same ``events`` table (bench/limits.py). Then the auditor's export of the
whole ledger and its ``verify-export``, each in its own process: events per wall second
beside the same raw read, and peak memory (flat whatever the ledger's size: both work a
chunk of events at a time).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
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


def cli_run(data_dir: Path, *args: str) -> tuple[float, float]:
    """``ticketline ARGS`` in its own process: wall seconds and peak RSS (MB)."""
    command = [sys.executable, "-m", "shared.app.cli", *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=cli_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    said = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"ticketline {args[0]} failed: {said[-500:]!r}")
    return seconds, usage.ru_maxrss / 1024


async def bench_replay_all(report: Any, data_dir: Path, tickets: int) -> None:
    """The report section: one row per projection, the command's wall time beside the raw
    read of the ledger it replays."""
    lines, seconds = await asyncio.to_thread(cli_replay, data_dir)
    summary = lines[-1]
    ledger = f"sqlite+aiosqlite:///{data_dir}/ticketline.db"
    raw = await raw_read_and_decode(ledger)
    section = report.section(
        f"ticketline replay of every projection, export and verify-export ({tickets:,} tickets, "
        f"{raw.count:,} events; "
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
    with tempfile.TemporaryDirectory(prefix="ticketline-bench-export-") as tmp:
        out = Path(tmp) / "ledger.jsonl"
        for figure, args in (
            ("export of the whole ledger (JSON lines)", ("export", "--out", str(out))),
            ("verify-export of that file", ("verify-export", str(out))),
        ):
            seconds, peak = await asyncio.to_thread(cli_run, data_dir, *args)
            size = out.stat().st_size / 1e6
            section.compare(
                figure,
                Result(raw.count, seconds),
                raw,
                unit="events/s",
                note=f"{seconds:.1f} s in all, peak RSS {peak:.0f} MB for a {size:.0f} MB "
                "file; limit: raw read + orjson.loads of the same events table",
            )

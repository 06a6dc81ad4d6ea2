"""The import of a generated history (tests/support/history.py) on the embedded default,
beside a bulk append of the same events.

- ``ticketline import tickets`` as an operator runs it (its own process, SQLite): all or
  nothing (a validating pass spooling its decisions, then the writing pass appending
  them) and ``--skip-invalid`` (one pass: read, decide, append), events/s from the
  import's own summary;
- the limit: the same events (read back from the imported ledger, payloads built before
  the clock starts) appended with ``EventStore.append`` into the same starting database,
  500 tickets' streams per call and transaction — the bulk write the import is made of,
  without parsing, validating, deciding or read models — with the same garbage-collector
  setting as ``ticketline import`` (``bulk_gc``);
- peak memory (max RSS) of the import process for two file sizes: flat memory means the
  larger file needs no more than the smaller one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.measure import Result
from bench.report import Report
from shared.app.config import Settings
from shared.app.personal import MASTER_KEY_FILE
from shared.app.platform import Platform
from shared.eventstore.bulk import bulk_gc
from shared.eventstore.ledger import NEW_STREAM, StreamAppend, row_to_envelope
from shared.eventstore.migrations import upgrade
from shared.eventstore.personal.tables import (
    personal_data_aliases,
    personal_data_keys,
    personal_data_master,
    personal_data_phones,
)
from shared.eventstore.tables import events
from shared.kernel.events.envelope import Actor, CommandContext, PendingEvent
from shared.kernel.events.registry import typed_payload
from tests.support.history import NETWORK_FILES, write_history

CONTEXT = CommandContext(actor=Actor(subject="bench", role="admin"), service="intake")
BATCH = 500


def cli_env(data_dir: Path) -> dict[str, str]:
    """The environment of a ``ticketline`` command on the embedded database in ``data_dir``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TICKETLINE_DATABASE_URL")
    }
    env["TICKETLINE_DATA_DIR"] = str(data_dir)
    return env


def cli_import(data_dir: Path, kind: str, path: Path, *extra: str) -> tuple[dict[str, Any], float]:
    """``ticketline import`` in its own process: its summary and peak RSS (MB)."""
    env = cli_env(data_dir)
    command = [
        sys.executable,
        "-m",
        "shared.app.cli",
        "import",
        kind,
        str(path),
        "--quiet",
        "--operator",
        "bench",
        *extra,
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    summary = json.loads(out)
    if summary["status"] != "imported":
        raise RuntimeError(f"import of {kind} failed: {summary}")
    return summary, usage.ru_maxrss / 1024


def copy_database(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if (source / f"ticketline.db{suffix}").exists():
            shutil.copy(source / f"ticketline.db{suffix}", target / f"ticketline.db{suffix}")


def copy_customer_keys(source: Path, target: Path) -> None:
    """The imported customers' data keys (and the master key wrapping them): appending
    their events again seals them with the same keys, without creating any."""
    shutil.copy(source / MASTER_KEY_FILE, target / MASTER_KEY_FILE)
    with contextlib.closing(sqlite3.connect(target / "ticketline.db")) as conn, conn:
        conn.execute("ATTACH DATABASE ? AS imported", (str(source / "ticketline.db"),))
        tables = (
            personal_data_master,
            personal_data_keys,
            personal_data_phones,
            personal_data_aliases,
        )
        for table in tables:
            conn.execute(f"DELETE FROM main.{table.name}")
            conn.execute(f"INSERT INTO main.{table.name} SELECT * FROM imported.{table.name}")


async def bulk_append_same_events(imported: Path, base: Path) -> Result:
    """The imported tickets' events appended again into a copy of the starting database:
    500 tickets a call; only the appends are timed."""
    source = Platform.from_settings(Settings(data_dir=imported))
    target_dir = base.parent / "bulk"
    copy_database(base, target_dir)
    copy_customer_keys(imported, target_dir)
    target = Platform.from_settings(Settings(data_dir=target_dir))
    e = events.c
    seconds, count, after = 0.0, 0, ""
    try:
        while True:
            ids_query = (
                select(e.stream_id)
                .where(e.stream_type == "ticket", e.stream_version == 1, e.stream_id > after)
                .order_by(e.stream_id)
                .limit(BATCH)
            )
            ids = await source.db.read(lambda c, q=ids_query: list(c.execute(q).scalars()))
            if not ids:
                return Result(count, seconds, detail={"tickets_per_call": BATCH})
            after = ids[-1]
            query = (
                select(events).where(e.stream_id.in_(ids)).order_by(e.stream_id, e.stream_version)
            )
            rows = await source.db.read(
                lambda c, q=query: [row_to_envelope(tuple(r)) for r in c.execute(q)]
            )
            streams: dict[str, list[PendingEvent]] = {}
            regions: dict[str, str | None] = {}
            for envelope in rows:
                streams.setdefault(envelope.stream_id, []).append(
                    PendingEvent(typed_payload(envelope), envelope.occurred_at)
                )
                regions[envelope.stream_id] = envelope.region
            appends = [
                StreamAppend(sid, evs, NEW_STREAM, regions[sid]) for sid, evs in streams.items()
            ]
            with bulk_gc():
                started = time.perf_counter()
                await target.db.write(lambda c, a=appends: target.store.append(c, a, CONTEXT))
                seconds += time.perf_counter() - started
            count += len(rows)
    finally:
        await source.close()
        await target.close()


def imported(summary: dict[str, Any]) -> Result:
    return Result(summary["events"], summary["seconds"], detail={"rows": summary["rows"]})


async def bench_import(
    report: Report, tmp: Path, args: Any, progress: Callable[[str], None]
) -> None:
    section = report.section(
        f"Import of a generated history ({args.import_tickets:,} tickets; SQLite, own process)"
    )
    root = tmp / "import"
    progress(f"import: generating {args.import_tickets:,} and {args.import_small:,} tickets")
    files = await asyncio.to_thread(write_history, root / "files", args.import_tickets)
    small = await asyncio.to_thread(write_history, root / "small", args.import_small)
    base = root / "base"
    upgrade(f"sqlite+aiosqlite:///{base}/ticketline.db")
    for kind in NETWORK_FILES:
        await asyncio.to_thread(cli_import, base, kind, files[kind])
    runs: dict[str, tuple[dict[str, Any], float]] = {}
    for name, extra, ticket_file in (
        ("default", (), files["tickets"]),
        ("skip_invalid", ("--skip-invalid",), files["tickets"]),
        ("small", (), small["tickets"]),
    ):
        progress(f"import: tickets ({name})")
        copy_database(base, root / name)
        runs[name] = await asyncio.to_thread(
            cli_import, root / name, "tickets", ticket_file, *extra
        )
    progress("import: bulk append of the same events")
    bulk = await bulk_append_same_events(root / "default", base)
    limit_note = (
        f"limit: EventStore.append of the same {bulk.count:,} events, {BATCH} tickets a call"
    )
    default, skip = imported(runs["default"][0]), imported(runs["skip_invalid"][0])
    section.compare(
        "import tickets, all or nothing (validate, write)",
        default,
        bulk,
        unit="events/s",
        note=limit_note,
    )
    section.compare(
        "import tickets --skip-invalid (one pass)", skip, bulk, unit="events/s", note=limit_note
    )
    rows = runs["default"][0]["rows"]
    section.add(
        "  tickets/s (all or nothing)",
        default.count and rows / default.seconds,
        None,
        unit="rows/s",
    )
    section.add(
        f"import peak memory (max RSS), {args.import_tickets:,} tickets",
        runs["default"][1],
        runs["small"][1],
        unit="MB",
        note=f"reference: the same import of {args.import_small:,} tickets (flat memory: ratio ≈ 1)",
    )

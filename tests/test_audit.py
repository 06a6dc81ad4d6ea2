"""Auditor tools: replay equals live, as-of replay, verify CLI, export round trip."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from services.intake.app import create_app
from shared.app.audit import (
    ExportScope,
    parse,
    render,
    select_events,
    signing_key,
    summarise,
    verify_export,
)
from shared.app.config import Settings
from shared.app.platform import Platform
from shared.app.replay import diff_tables, progress_bar, replay
from shared.eventstore.db import Database
from shared.eventstore.ledger import NO_STREAM
from shared.eventstore.migrations import upgrade
from shared.eventstore.tables import events
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.tickets import TicketClosed
from shared.readmodels.ticket_state import TicketStateProjection, ticket_state
from tests.support.auth import headers_for
from tests.support.factories import diagnosed, new_ticket_id, received
from tests.support.kafka import relay_all
from tests.support.ledger import append
from tests.support.ports import free_ports_env


async def seed(platform: Platform, clock, tickets: int = 4) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for n in range(tickets):
        tid = new_ticket_id()
        ids.append(tid)
        region = "east" if n % 2 == 0 else "west"
        await append(platform, tid, NO_STREAM, [received(n, region=region)], region=region)
        clock.advance(hours=1)
        await append(platform, tid, 1, [diagnosed()], region=region)
    return ids


async def test_replay_equals_live_and_reports_differences(platform: Platform, clock) -> None:
    ids = await seed(platform, clock)
    projection = TicketStateProjection()
    (result,) = await replay(platform.settings, [projection])
    assert result.events == 8 and result.differences == []
    # A live read table that drifted from the events is reported.
    drift = update(ticket_state).where(ticket_state.c.ticket_id == ids[0]).values(status="closed")
    await platform.db.write(lambda c: c.execute(drift))
    (result,) = await replay(platform.settings, [projection])
    assert result.differences and "ticket_state" in result.differences[0]


async def test_replay_says_when_live_is_only_behind(platform: Platform) -> None:
    """Events its projector has not applied yet (just after a migration, say) are no
    drift: the report says so first."""
    await append(platform, new_ticket_id(), NO_STREAM, [received(1)], region="east", inline=False)
    (result,) = await replay(platform.settings, [TicketStateProjection()])
    assert result.differences[0].startswith("live ticket_state is 1 ledger positions behind")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_replay_says_when_the_live_ledger_moved_on_while_it_ran(
    platform: Platform, clock, tmp_path
) -> None:
    """A job writing while the replay runs (an SLA breach on `make run`) makes the live
    rows hold events the copy has not: the report says so first."""
    from shared.app.replay import copy_ledger, differences_from_live

    await seed(platform, clock, tickets=1)
    url = f"sqlite+aiosqlite:///{tmp_path}/scratch.db"
    upgrade(url)
    scratch = Platform.from_settings(Settings(database_url=url, data_dir=tmp_path))
    try:
        await copy_ledger(platform.db, scratch.db, None)
        projection = TicketStateProjection()
        await scratch.runner.rebuild(projection)
        await append(platform, new_ticket_id(), NO_STREAM, [received(9)], region="east")
        differences = await differences_from_live(platform, scratch, projection)
    finally:
        await scratch.close()
    assert differences[0].startswith("the live ledger moved on by 1 event(s) since the replay")


async def test_replay_tells_another_text_of_the_same_value_from_a_difference(
    platform: Platform, clock
) -> None:
    """On SQLite the tables are compared as stored first; a time kept in another text
    (as an older version may have written it) is the same value, not a difference."""
    ids = await seed(platform, clock)
    if platform.db.is_sqlite:
        older = "UPDATE ticket_state SET created_at = substr(created_at, 1, 19) WHERE ticket_id = ?"
        await platform.db.write(lambda c: c.exec_driver_sql(older, (ids[0],)))
    (result,) = await replay(platform.settings, [TicketStateProjection()])
    assert result.differences == []


def test_the_same_rows_in_another_order_are_no_difference() -> None:
    """PostgreSQL's collation may sort text keys unlike SQLite's bytes."""
    live = {"t": [("a-1", 1), ("A-2", 2)]}
    assert diff_tables(live, {"t": [("A-2", 2), ("a-1", 1)]}) == []
    found = diff_tables(live, {"t": [("A-2", 2), ("a-1", 3)]})
    assert found[0] == "t: 2 live rows, 2 rebuilt; 1 only live, 1 only rebuilt"
    # With the table's columns: a row both hold under one key, by the columns that differ.
    from sqlalchemy import Column, Integer, MetaData, String, Table

    t = Table("t", MetaData(), Column("id", String, primary_key=True), Column("n", Integer))
    found = diff_tables(live, {"t": [("A-2", 2), ("a-1", 3), ("b-3", 4)]}, {"t": t})
    assert found[1:] == ["  id='a-1': n: live 1, rebuilt 3", "  rebuilt only: id='b-3', n=4"]


async def test_replay_reports_its_progress_once_done_when_it_folds_in_the_database(
    platform: Platform, clock, capsys
) -> None:
    from services.feedback.projections import ComplianceProjection

    await seed(platform, clock)
    await replay(platform.settings, [TicketStateProjection()], show_progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["ticket_state: 8/8 events"]
    # Folded event by event, it reports as its batches are applied, up to the same line.
    await replay(platform.settings, [ComplianceProjection()], show_progress=True)
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("feedback_compliance: 8/8 events")
    # Nothing to apply (and a source ending with empty batches): said once.
    report = progress_bar("empty")
    for _ in range(3):
        report(0, 0)
    assert [line.split(",")[0] for line in capsys.readouterr().err.splitlines()] == [
        "empty: 0/0 events"
    ]


async def test_replay_until_rebuilds_the_past(platform: Platform, clock, tmp_path) -> None:
    ids = await seed(platform, clock, tickets=2)  # starts 09:00, +1 h per ticket
    cutoff = clock.now()
    clock.advance(hours=1)
    await append(platform, ids[0], 2, [TicketClosed()], region="east", inline=False)
    into = tmp_path / "asof.db"
    (result,) = await replay(platform.settings, [TicketStateProjection()], until=cutoff, into=into)
    assert result.events == 4
    past = Database(f"sqlite+aiosqlite:///{into}")
    try:
        query = select(ticket_state.c.ticket_id, ticket_state.c.status)
        statuses = dict(await past.read(lambda c: c.execute(query).all()))
    finally:
        await past.dispose()
    assert statuses == {ids[0]: "diagnosed", ids[1]: "diagnosed"}


async def test_a_replay_into_a_file_that_fails_midway_leaves_no_file(
    platform: Platform, clock, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built beside the path and moved there once whole: an interrupted replay (Ctrl-C, a
    failure) leaves nothing that looks finished, and the same command runs again."""
    import shared.app.replay as replay_module

    await seed(platform, clock, tickets=2)
    into = tmp_path / "asof.db"
    real = replay_module.differences_from_live

    async def interrupted(*_args: object, **_kwargs: object) -> list[str]:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(replay_module, "differences_from_live", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        await replay(platform.settings, [TicketStateProjection()], into=into)
    assert not any(p.name.startswith(".asof.db") or p.name == "asof.db" for p in tmp_path.iterdir())
    monkeypatch.setattr(replay_module, "differences_from_live", real)
    (result,) = await replay(platform.settings, [TicketStateProjection()], into=into)
    assert result.events == 4 and result.differences == []
    assert sorted(p.name for p in tmp_path.iterdir() if "asof" in p.name) == ["asof.db"]


async def test_replay_copies_the_ledger_row_for_row(platform: Platform, clock, tmp_path) -> None:
    """The scratch ledger (copied as stored, on the bare drivers) is the live one: every
    column, times included, and its hash chain verifies."""
    from shared.eventstore.verify import verify_ledger

    await seed(platform, clock, tickets=3)
    into = tmp_path / "copy.db"
    await replay(platform.settings, [TicketStateProjection()], into=into)
    query = select(events).order_by(events.c.position)
    live = await platform.db.read(lambda c: c.execute(query).all())
    copy = Database(f"sqlite+aiosqlite:///{into}")
    try:
        copied = await copy.read(lambda c: c.execute(query).all())
        report = await copy.read(lambda c: verify_ledger(c, platform.store))
    finally:
        await copy.dispose()
    assert [tuple(r) for r in copied] == [tuple(r) for r in live] and len(live) == 6
    assert report.ok


async def run_cli(database_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.app.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode() + err.decode()


def printed(out: str) -> Any:
    """The JSON a command printed, whatever it said on stderr before or after it."""
    return json.JSONDecoder().raw_decode(out, out.index("{"))[0]


async def test_verify_cli_exit_codes(platform: Platform, clock, database_url: str) -> None:
    await seed(platform, clock, tickets=2)
    code, out = await run_cli(database_url, "verify")
    assert code == 0 and printed(out)["ok"] is True
    tamper = update(events).where(events.c.position == 2).values(region="north")
    await platform.db.write(lambda c: c.execute(tamper))
    code, out = await run_cli(database_url, "verify")
    report = printed(out)
    assert (
        code == 1 and report["broken"][0]["kind"] == "hash" and report["broken"][0]["position"] == 2
    )
    # A row edited into no event at all, and a later one tampered with: both reported, the
    # walk goes to the end (no traceback, no stop at the first).
    garbage = update(events).where(events.c.position == 3).values(payload="not json")
    await platform.db.write(lambda c: c.execute(garbage))
    code, out = await run_cli(database_url, "verify")
    assert "Traceback" not in out
    report = printed(out)
    found = [(b["kind"], b["position"]) for b in report["broken"]]
    assert code == 1 and found == [("hash", 2), ("unreadable", 3)]
    assert report["events_checked"] == 4
    # A replay of a damaged ledger is a finding about the data (1), not a bug (70).
    code, out = await run_cli(database_url, "replay", "--quiet")
    assert code == 1 and "Traceback" not in out, out
    assert "ticketline verify" in out and "position 2" in out


async def test_a_payload_of_another_shape_is_a_finding_for_every_reader(
    platform: Platform, clock, database_url: str, tmp_path
) -> None:
    """JSON, but not the event's payload: the tickets export names the row (exit 1), as
    verify does, and the replay finds a difference — never a pydantic traceback."""
    await seed(platform, clock, tickets=2)
    await platform.db.write(
        lambda c: c.execute(update(events).where(events.c.position == 3).values(payload="[]"))
    )
    tickets = ("export", "--kind", "tickets", "--out", str(tmp_path / "t.csv"))
    code, out = await run_cli(database_url, *tickets)
    assert code == 1 and "position 3 (hash" in out and "Traceback" not in out, out
    code, out = await run_cli(database_url, "replay", "--quiet")
    assert code == 1 and "Traceback" not in out, out
    # The audit export copies rows as stored (verify-export checks them), and says so: 1.
    code, out = await run_cli(database_url, "export", "--out", str(tmp_path / "all.jsonl"))
    assert code == 1 and "do not match their hash in the ledger (position 3)" in out, out
    assert "Traceback" not in out


async def test_an_edited_row_is_said_by_export_replay_and_verify_export(
    platform: Platform, clock, database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payload edited in place (its hash left): the export is signed as stored but says
    which rows no longer match (in its signed summary, and exit 1); the replay, which
    rebuilds the edit, points to `verify`; verify-export does not say "after the export"."""
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(platform.settings.data_dir))
    await seed(platform, clock, tickets=2)
    (row,) = await platform.db.read(
        lambda c: c.execute(select(events.c.payload).where(events.c.position == 2)).all()
    )
    edited = row.payload.replace('"general"', '"simple"')
    assert edited != row.payload
    tamper = update(events).where(events.c.position == 2).values(payload=edited)
    await platform.db.write(lambda c: c.execute(tamper))
    out_file = tmp_path / "all.jsonl"
    code, out = await run_cli(database_url, "export", "--out", str(out_file))
    assert code == 1 and "1 exported event(s) do not match their hash" in out, out
    summary = json.loads((tmp_path / "all.jsonl.summary.json").read_text())
    assert summary["not_matching_hash"] == {"events": 1, "positions": [2]}
    code, out = await run_cli(database_url, "verify-export", str(out_file))
    assert code == 1 and "(edited in the ledger;" in out and "after the export" not in out, out
    code, out = await run_cli(database_url, "replay", "--quiet")
    assert code == 1 and "rebuilt from the ledger as stored; `ticketline verify`" in out, out

    # Elsewhere (an empty ledger, no signing key): said once, and no key made up for it.
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(elsewhere))
    other_url = f"sqlite+aiosqlite:///{elsewhere}/ticketline.db"
    assert (await run_cli(other_url, "migrate"))[0] == 0
    code, out = await run_cli(other_url, "verify-export", str(out_file))
    report = printed(out)
    assert code == 1 and "no audit signing key" in report["problems"][0], out
    assert "the ledger here holds no events" in report["problems"][1]
    assert not any("is not in the ledger" in p for p in report["problems"])
    assert not (elsewhere / "audit-signing.key").exists()


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's timestamptz holds no text
async def test_a_time_that_is_none_is_a_finding_for_replay_and_export(
    platform: Platform, clock, database_url: str, tmp_path
) -> None:
    await seed(platform, clock, tickets=2)
    damage = text("UPDATE events SET occurred_at = 'garbage' WHERE position = 2")
    await platform.db.write(lambda c: c.execute(damage))
    for command in (("replay", "--quiet"), ("export", "--out", str(tmp_path / "all.jsonl"))):
        code, out = await run_cli(database_url, *command)
        assert code == 1 and "position 2" in out and "Traceback" not in out, (command, out)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_reader_that_goes_away_is_no_bug(platform: Platform, clock, database_url: str):
    """`ticketline replay | head -1`: the pipe closed before the output is written is a
    quiet 141 (as a shell's SIGPIPE), not a traceback and 70."""
    await seed(platform, clock, tickets=2)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write is EPIPE
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.app.cli",
            "replay",
            "--quiet",
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert process.stderr is not None
    err = await asyncio.wait_for(process.stderr.read(), 120)
    assert await process.wait() == 141 and b"Traceback" not in err, err


def test_only_a_refused_payload_or_a_schema_table_gone_is_taken_for_the_datas_fault() -> None:
    """A missing JSON function or a misspelt table is a bug (exit 70, its traceback), not
    a damaged ledger (1) or a damaged database (2)."""
    import sqlite3

    from shared.app.cli import ledger_damage, missing_table

    assert ledger_damage(sqlite3.OperationalError("malformed JSON")) is not None
    assert ledger_damage(sqlite3.OperationalError("no such function: json_extract")) is None
    assert missing_table(sqlite3.OperationalError("no such table: events")) is not None
    assert missing_table(sqlite3.OperationalError("no such table: evnts")) is None


def test_a_damaged_database_file_or_a_full_disk_is_said_not_taken_for_an_outage() -> None:
    """A page SQLite finds damaged is a finding (1: restore a backup), not a database to
    wait for (3); a full disk under an output is a plain refusal (2), not a traceback."""
    import errno
    import sqlite3

    from sqlalchemy.exc import DatabaseError

    from shared.app.cli import explained_failure
    from shared.eventstore.db import DatabaseUnavailable

    damaged = DatabaseUnavailable("the database is unavailable: database disk image is malformed")
    damaged.__cause__ = DatabaseError(
        "SELECT", {}, sqlite3.DatabaseError("database disk image is malformed")
    )
    code, said = explained_failure(damaged) or (None, "")
    assert code == 1 and "damaged" in said and "backup" in said
    full = OSError(errno.ENOSPC, "No space left on device")
    assert (explained_failure(full) or (None,))[0] == 2
    assert (explained_failure(DatabaseUnavailable("database is locked")) or (None,))[0] == 3


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's integer column holds no text
async def test_a_version_stored_as_text_is_a_finding_for_replay_too(
    platform: Platform, clock, database_url: str
) -> None:
    await seed(platform, clock, tickets=2)
    damage = text("UPDATE events SET stream_version = 'one' WHERE position = 2")
    await platform.db.write(lambda c: c.execute(damage))
    code, out = await run_cli(database_url, "replay", "--quiet")
    assert code == 1 and "position 2" in out and "Traceback" not in out, out


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_database_missing_its_ledger_is_refused_not_a_bug(
    platform: Platform, database_url: str
) -> None:
    await platform.db.write(lambda c: c.exec_driver_sql("DROP TABLE events"))
    code, out = await run_cli(database_url, "verify")
    assert code == 2 and "not a whole Ticketline database" in out and "Traceback" not in out


def test_a_database_path_that_is_no_file_or_cannot_be_written_is_refused(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refusals (2) saying what to do, not an outage to wait for (3) — SQLite opens a
    database read-only only beside a writable write-ahead log."""
    from shared.app.cli import schema_problem

    (tmp_path / "dir" / "ticketline.db").mkdir(parents=True)
    problem = schema_problem(Settings(data_dir=tmp_path / "dir"))
    assert problem is not None and problem.endswith("ticketline.db is not a database file")
    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'ro' / 'ticketline.db'}")
    assert schema_problem(Settings(data_dir=tmp_path / "ro")) is None
    monkeypatch.setattr(os, "access", lambda *_args: False)  # a read-only mount, even for root
    problem = schema_problem(Settings(data_dir=tmp_path / "ro"))
    assert problem is not None and "cannot be written here" in problem


@pytest.mark.parametrize("command", ["migrate", "run"])
def test_migrate_and_run_refuse_a_file_that_is_not_the_platforms(
    command: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 saying what to do, never a traceback (70), never Ticketline's schema added
    to another application's SQLite file."""
    import sqlite3

    from shared.app.cli import main as cli_main

    for port_variable, port in free_ports_env().items():
        monkeypatch.setenv(port_variable, port)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "ticketline.db").write_text("notes, not a database\n")
    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "ticketline.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'ro' / 'ticketline.db'}")
    for data_dir, said in [
        ("text", "ticketline.db is not a SQLite database"),
        ("other", "ticketline.db holds another application's tables"),
        ("ro", "cannot be written here"),
    ]:
        monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path / data_dir))
        with monkeypatch.context() as patch:
            if data_dir == "ro":  # a read-only mount, even for root
                patch.setattr(os, "access", lambda *_args: False)
            assert cli_main([command]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ticketline {command}: ") and said in err, err
    with sqlite3.connect(tmp_path / "other" / "ticketline.db") as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM sqlite_master")] == ["invoices"]


@pytest.mark.parametrize(
    "command", [["replay"], ["verify"], ["checkpoint"], ["checkpoint", "--public-key"]]
)
def test_a_closed_stderr_is_no_failure_of_the_command(command: list[str], tmp_path) -> None:
    """`2>&-` (a cron line): the command's work and exit code as with stderr kept."""
    import subprocess

    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'ticketline.db'}")
    done = subprocess.run(
        [sys.executable, "-m", "shared.app.cli", *command],
        env={**os.environ, "TICKETLINE_DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.close(2),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout
    if command == ["checkpoint"]:  # nothing to sign yet, and no "last one" to speak of
        assert json.loads(done.stdout) == {"appended": False, "reason": "the ledger is empty"}


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_database_out_of_reach_is_exit_3_not_a_broken_chain(database_url: str) -> None:
    """No server listens (port 1): a script must tell an outage from tampering."""
    away = database_url.replace(database_url.split("@")[1].split("/")[0], "127.0.0.1:1")
    for command in ("verify", "migrate", "parked"):
        code, out = await run_cli(
            away, *command.split(), *(["list"] if command == "parked" else [])
        )
        assert code == 3 and "cannot reach the database" in out, out
        assert "Traceback" not in out


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_database_that_refuses_the_login_is_exit_2(database_url: str) -> None:
    """No such database, no such role: a configuration to fix (2), not an outage (3)."""
    scheme, rest = database_url.split("://")
    server_and_database = rest.split("@", 1)[1]
    for wrong in (
        database_url.rsplit("/", 1)[0] + "/no_such_database",
        f"{scheme}://no_such_role@{server_and_database}",
    ):
        code, out = await run_cli(wrong, "verify")
        assert code == 2 and "the database refused the connection" in out, out
        assert "Traceback" not in out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_export_round_trips_and_detects_tampering(
    platform: Platform, clock, fmt: str
) -> None:
    ids = await seed(platform, clock, tickets=3)
    key = signing_key(platform.settings)
    envelopes = await platform.db.read(lambda c: select_events(c, ExportScope(ticket_id=ids[1])))
    data = render(envelopes, fmt)
    summary = summarise(data, envelopes, fmt, {"ticket_id": ids[1]}, key)
    assert parse(data, fmt) == envelopes

    async def check(data: bytes, summary: dict):  # type: ignore[no-untyped-def]
        return await platform.db.read(
            lambda c: verify_export(data, summary, key, c, platform.store)
        )

    assert (await check(data, summary)).ok
    # An event the ledger no longer holds at its position (a ledger cut short) says so.
    from shared.app.audit import _against_ledger

    gone = EventEnvelope.trusted({**envelopes[0].__dict__, "position": 10**9})
    said = await platform.db.read(lambda c: _against_ledger(c, [gone]))
    assert said == [f"event {gone.event_id} (position {10**9}) is not in the ledger"]
    tampered = data.replace(b"WM-700", b"WM-701")
    found = await check(tampered, summary)
    assert not found.ok and any("sha256" in p for p in found.problems)
    found = await check(data, {**summary, "events": 99})
    assert any("signature" in p for p in found.problems)
    # A file whose summary was re-made by someone without the key still fails.
    resigned = summarise(tampered, envelopes, fmt, {"ticket_id": ids[1]}, b"another key")
    assert not (await check(tampered, resigned)).ok
    # A key given twice in a line, signed again with the key itself: not one reading.
    if fmt == "jsonl":
        first, rest = data.split(b"\n", 1)
        doubled = first.replace(b'"payload":{', b'"payload":{"urgency":"smuggled",', 1)
        assert doubled != first
        doubled_data = doubled + b"\n" + rest
        doubled_summary = summarise(doubled_data, envelopes, fmt, {"ticket_id": ids[1]}, key)
        found = await check(doubled_data, doubled_summary)
        assert any("given more than once" in p for p in found.problems), found.problems
        # A file cut off inside its last event: the finding names that line of the file
        # (the JSON parser alone says "line 1", the line within the record).
        cut_off = data[:-40]
        summary_of_cut = summarise(cut_off, envelopes, fmt, {"ticket_id": ids[1]}, key)
        found = await check(cut_off, summary_of_cut)
        lines = data.count(b"\n")
        assert any(f"line {lines}: " in p for p in found.problems), found.problems
    # An event cut out and the summary signed again with the key itself: the ledger
    # holds an event of the export's scope, within its positions, that the file lacks.
    assert len(envelopes) >= 2
    cut = envelopes[1:]
    cut_data = render(cut, fmt)
    found = await check(cut_data, summarise(cut_data, cut, fmt, {"ticket_id": ids[1]}, key))
    assert found.problems == [
        "the ledger holds 1 event(s) of the export's scope, up to its last position, that "
        f"the file lacks (position {envelopes[0].position})"
    ]
    # The ledger's row edited after the export, its hash left alone: the export is no
    # longer what the ledger holds (found by a black-box pass: it said ok).
    edit = update(events).where(events.c.position == envelopes[0].position).values(region="x")
    await platform.db.write(lambda c: c.execute(edit))
    found = await check(data, summary)
    assert any("no longer matches its hash" in p for p in found.problems), found.problems


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_exports_are_written_and_checked_a_chunk_at_a_time(
    platform: Platform, clock, fmt: str, monkeypatch
) -> None:
    """Flat memory whatever the ledger's size: written and verified in chunks, the same
    bytes as the whole export; a gap or a reordering across chunks is still found."""
    import io

    from shared.app import audit

    await seed(platform, clock, tickets=4)
    key = signing_key(platform.settings)
    whole = await platform.db.read(select_events)
    monkeypatch.setattr(audit, "CHUNK", 3)
    out = io.BytesIO()
    tally = await platform.db.read(
        lambda c: audit.write_export(c, out, fmt, ExportScope(region="east"))
    )
    east = [e for e in whole if e.region == "east"]
    data = out.getvalue()
    assert data == render(east, fmt)
    summary = audit.export_summary(tally, fmt, ExportScope(region="east").as_summary(), key)
    assert summary == summarise(data, east, fmt, summary["scope"], key)

    async def check(data: bytes) -> list[str]:
        resigned = summarise(data, parse(data, fmt), fmt, summary["scope"], key)
        found = await platform.db.read(
            lambda c: verify_export(io.BytesIO(data), resigned, key, c, platform.store)
        )
        return found.problems

    assert await check(data) == []
    cut = render(east[:2] + east[3:], fmt)  # the third of the scope's events left out
    assert await check(cut) == [
        "the ledger holds 1 event(s) of the export's scope, up to its last position, that "
        f"the file lacks (position {east[2].position})"
    ]
    swapped = render([east[1], east[0], *east[2:]], fmt)
    assert await check(swapped) == [
        "the file's events are not in position order, as an export writes them"
    ]


async def test_export_over_http_and_cli_verify(
    platform: Platform, clock, database_url: str, tmp_path
) -> None:
    await seed(platform, clock, tickets=4)
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake.test", headers=headers_for("auditor")
    ) as client:
        response = await client.get("/audit/export", params={"region": "east", "format": "csv"})
        backwards = {"recorded_from": "2026-11-03T00:00:00Z", "recorded_to": "2026-11-02T00:00:00Z"}
        inverted = await client.get("/audit/export", params=backwards)
        unknown = await client.get("/audit/export", params={"ticket_id": str(uuid.uuid4())})
        # As feedback's reports: without `format`, what the caller accepts.
        accepted = await client.get(
            "/audit/export", params={"region": "east"}, headers={"Accept": "text/csv"}
        )
        plain = await client.get("/audit/export", params={"region": "east"})
        weighed = {
            accept: (
                await client.get(
                    "/audit/export", params={"region": "east"}, headers={"Accept": accept}
                )
            ).headers["content-type"]
            for accept in (
                "TEXT/CSV",
                "text/csv;q=0",
                "application/json, text/csv;q=0.1",
                "text/csv;q=0.5, */*",
            )
        }
    assert accepted.content == response.content
    assert accepted.headers["content-type"].startswith("text/csv")
    assert plain.headers["content-type"].startswith("application/x-ndjson")
    # Media types compare case-insensitively; a weight of 0, or a preferred type, is no CSV.
    assert [t.split(";")[0] for t in weighed.values()] == [
        "text/csv",
        "application/x-ndjson",
        "application/x-ndjson",
        "application/x-ndjson",
    ]
    assert inverted.status_code == 422 and inverted.json()["errors"][0]["field"] == "recorded_to"
    assert unknown.status_code == 404 and unknown.json()["rule"] == "ticket_not_found"
    assert response.status_code == 200, response.text
    summary = json.loads(response.headers["x-export-summary"])
    assert summary["events"] == 4 and summary["format"] == "csv"
    assert int(response.headers["content-length"]) == len(response.content)
    export = tmp_path / "east.csv"
    export.write_bytes(response.content)
    (tmp_path / "east.csv.summary.json").write_text(json.dumps(summary))
    # The CLI checks it with the same key (the data dir the platform generated it in).
    os.environ["TICKETLINE_DATA_DIR"] = str(platform.settings.data_dir)
    try:
        code, out = await run_cli(database_url, "verify-export", str(export))
        assert code == 0, out
        # The CLI signs the period as the API writes it: in UTC, whatever offset it was given.
        local = ("export", "--from", "2026-11-02T08:00:00+08:00", "--out", str(tmp_path / "l.jl"))
        code, out = await run_cli(database_url, *local)
        assert printed(out)["scope"]["recorded_from"] == "2026-11-02T00:00:00+00:00", out
        # A mistyped ticket id gets no signed "nothing happened": refused, no file.
        nowhere = tmp_path / "nowhere.jsonl"
        args = ("export", "--ticket", str(uuid.uuid4()), "--out", str(nowhere))
        code, out = await run_cli(database_url, *args)
        assert code == 2 and "--ticket: no ticket" in out, out
        assert list(tmp_path.glob("*nowhere*")) == []
        # A summary that is no summary fails the check with a reason, never a traceback.
        for bad in ("garbage", "[1,2", "[]", "{}"):
            (tmp_path / "east.csv.summary.json").write_text(bad)
            code, out = await run_cli(database_url, "verify-export", str(export))
            assert code == 1 and "Traceback" not in out, out
            assert printed(out)["ok"] is False
        # A file checked against another format's summary: the finding names the format.
        lines = tmp_path / "east.jsonl"
        lines.write_text('{"event_id": "a"}\n{"event_id": "b"}\n')
        for fmt, data in (("csv", lines), ("jsonl", export)):
            (tmp_path / "other.summary.json").write_text(json.dumps({**summary, "format": fmt}))
            args = ("verify-export", str(data), "--summary", str(tmp_path / "other.summary.json"))
            code, out = await run_cli(database_url, *args)
            problems = printed(out)["problems"]
            assert code == 1 and any(
                f"cannot be read as {fmt}, the format its summary names" in p for p in problems
            ), out
    finally:
        del os.environ["TICKETLINE_DATA_DIR"]


def test_signing_key_is_generated_once(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert signing_key(settings) == signing_key(settings)
    assert (tmp_path / "audit-signing.key").stat().st_mode & 0o077 == 0


@pytest.mark.kafka
async def test_replay_from_kafka_equals_live(platform: Platform, clock, broker) -> None:
    await seed(platform, clock, tickets=3)
    await relay_all(platform.db, broker.bootstrap_servers)
    settings = platform.settings.model_copy(
        update={"kafka_bootstrap_servers": broker.bootstrap_servers}
    )
    (result,) = await replay(settings, [TicketStateProjection()], source="kafka")
    assert result.events == 6 and result.differences == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_outputs_never_overwrite_the_live_database_or_an_existing_file(
    platform: Platform, clock, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``replay --into`` given the live database once emptied the ledger and said it was
    identical; ``export --out`` wrote JSON Lines over it."""
    from shared.app.cli import main as cli_main
    from shared.app.config import CommandRefused

    await seed(platform, clock, tickets=2)
    live = platform.settings.resolved_database_url.split(":///", 1)[1]
    monkeypatch.setenv("TICKETLINE_DATABASE_URL", platform.settings.resolved_database_url)
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(platform.settings.data_dir))
    before = await platform.db.read(lambda c: c.execute(select(events)).all())
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    for argv in (
        ["replay", "--quiet", "--into", live],
        ["replay", "--quiet", "--into", str(other)],
        ["replay", "--quiet", "--into", str(tmp_path / "mistyped" / "rebuilt.db")],
        ["export", "--out", live],
        ["export", "--out", str(platform.settings.data_dir / "personal-data-master.key")],
        # No file: the summary would go to /dev/stdout.summary.json, the rename replace
        # the /dev/stdout link.
        ["export", "--out", "/dev/stdout"],
        ["export", "--kind", "tickets", "--out", "/dev/stdout"],
        ["export", "--kind", "tickets", "--out", str(tmp_path)],
    ):
        assert await asyncio.to_thread(cli_main, argv) == 2, argv
        assert "ticketline " in capsys.readouterr().err
    assert other.read_text() == "keep me"
    assert not (tmp_path / "mistyped").exists()
    # A directory where the summary goes: named as asked for, never the hidden draft's name.
    (tmp_path / "east.jsonl.summary.json").mkdir()
    code = await asyncio.to_thread(cli_main, ["export", "--out", str(tmp_path / "east.jsonl")])
    said = capsys.readouterr().err
    assert code != 0 and "east.jsonl.summary.json" in said and ".partial" not in said, said
    assert not (tmp_path / "east.jsonl").exists()
    # A place no file can be made: named as asked for too (the draft is never made).
    code = await asyncio.to_thread(cli_main, ["export", "--out", "/proc/east.jsonl"])
    said = capsys.readouterr().err
    assert code == 2 and "/proc/east.jsonl" in said and ".partial" not in said, said
    # A file where a directory should be is said so; a name near the limit is written.
    code = await asyncio.to_thread(cli_main, ["export", "--out", str(other / "x.jsonl")])
    said = capsys.readouterr().err
    assert code == 2 and f"Not a directory: {other}\n" in said, said
    long_name = tmp_path / ("a" * 235 + ".jsonl")  # its summary's name: 254 bytes
    assert await asyncio.to_thread(cli_main, ["export", "--out", str(long_name)]) == 0
    assert long_name.is_file() and not list(tmp_path.glob("*.partial"))
    capsys.readouterr()
    assert await platform.db.read(lambda c: c.execute(select(events)).all()) == before
    with pytest.raises(CommandRefused):
        await replay(platform.settings, [TicketStateProjection()], into=other)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_database_migrated_by_a_newer_release_is_refused_not_a_bug(
    platform: Platform, database_url: str
) -> None:
    """A rollback without restoring the backup (docs/operations.md): exit 2 saying so."""
    newer = text(
        "UPDATE alembic_version SET version_num = '0099_newer' WHERE version_num LIKE '00%'"
    )
    await platform.db.write(lambda c: c.execute(newer))
    for command in ("verify", "migrate"):
        code, out = await run_cli(database_url, command)
        assert code == 2 and "migrated by a newer release" in out and "Traceback" not in out
    # A server of this release still running says so too (not "database unavailable").
    from tests.support.clients import service_client

    async with service_client("intake", platform) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503 and "migrated by a newer release" in ready.json()["detail"]


def test_what_killed_runs_left_behind_is_swept_and_nothing_else(tmp_path) -> None:
    """A replay killed before its cleanup left its scratch directory and its draft beside
    the --into target (tens of MB each); the next run sweeps those of dead processes left
    untouched for ten minutes — never a live run's, nor a fresh one's."""
    import os
    import subprocess
    import sys

    from shared.app.files import ABANDONED_AFTER_SECONDS, sweep_abandoned

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    old = ABANDONED_AFTER_SECONDS + 60
    stale_dir = tmp_path / f"ticketline-replay-{dead}-x1y2"
    stale_dir.mkdir()
    (stale_dir / "replay.db").write_bytes(b"x")
    stale_draft = tmp_path / f".asof.db.{dead}.ab12cd34.partial-wal"
    stale_draft.write_bytes(b"x")
    live_draft = tmp_path / f".asof.db.{os.getpid()}.ab12cd34.partial"
    live_draft.write_bytes(b"x")
    fresh = tmp_path / f".asof.db.{dead}.ffff0000.partial"
    fresh.write_bytes(b"x")
    for path in (stale_dir / "replay.db", stale_dir, stale_draft, live_draft):
        os.utime(path, (os.path.getmtime(path) - old,) * 2)
    swept = sweep_abandoned(tmp_path, "ticketline-replay-") + sweep_abandoned(tmp_path, ".asof.db.")
    assert sorted(swept) == sorted([stale_dir, stale_draft])
    assert live_draft.exists() and fresh.exists() and not stale_dir.exists()


def test_a_stop_while_the_command_loads_is_its_exit_code_not_a_traceback() -> None:
    """`ticketline` stopped in the seconds its modules take to load (a busy machine)."""
    import subprocess

    started = (
        "import builtins, os, signal, sys\n"
        "from shared.app import entry\n"
        "real = builtins.__import__\n"
        "def loading(name, *args, **kwargs):\n"
        "    if name == 'shared.app.cli':\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = loading\n"
        "sys.exit(entry.main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", started], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 143 and done.stderr == "ticketline: terminated\n", done.stderr

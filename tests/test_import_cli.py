"""``ticketline import`` and ``ticketline export --kind`` as an operator runs them."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shared.app.cli import main
from shared.app.importing import commit
from shared.eventstore.migrations import upgrade
from tests.support.history import write_history


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(directory))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TICKETLINE_DATABASE_URL", raising=False)
    monkeypatch.setenv("TICKETLINE_OPERATOR", "ops-bob")
    upgrade(f"sqlite+aiosqlite:///{directory}/ticketline.db")
    return directory


def test_import_prints_a_summary_progress_and_a_report(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_history(tmp_path / "files", 20)
    assert main(["import", "service_points", str(files["service_points"])]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["status"] == "imported" and summary["imported"] == 9
    assert "service_points: validating" in err and "service_points: importing" in err
    assert "lines/s" in err and "ETA" in err

    bad = tmp_path / "technicians.csv"
    bad.write_text(
        "id,name,service_point_id,timezone\nt-1,One,sp-east-1,Mars/Olympus\nt-2,Two,sp-none,UTC\n"
    )
    assert main(["import", "technicians", str(bad), "--quiet"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "refused" and summary["report"] == f"{bad}.errors.csv"
    with open(summary["report"], newline="") as f:
        report = list(csv.reader(f))
    assert report[0] == ["line", "field", "problem"]
    assert [(r[0], r[1]) for r in report[1:]] == [("2", "timezone"), ("3", "service_point_id")]

    assert main(["import", "technicians", str(files["technicians"]), "--quiet", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "valid"

    # A file that is not there is named (not the report that would sit beside it).
    with pytest.raises(SystemExit) as exit_:
        main(["import", "technicians", str(tmp_path / "nowhere" / "t.csv")])
    assert exit_.value.code == 2
    assert f"{tmp_path / 'nowhere' / 't.csv'}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["import", "technicians", str(tmp_path)])
    assert f"{tmp_path}: a directory, not a file" in capsys.readouterr().err

    # The report is opened in a spreadsheet: a field named like a formula stays text.
    hostile = tmp_path / "technicians.jsonl"
    hostile.write_text('{"id": "t-9", "=HYPERLINK(\\"https://evil.example\\")": 1}\n')
    assert main(["import", "technicians", str(hostile), "--quiet"]) == 1
    report_path = json.loads(capsys.readouterr().out)["report"]
    with open(report_path, newline="") as f:
        fields = [row[1] for row in csv.reader(f)]
    assert '\'=HYPERLINK("https://evil.example")' in fields

    # Arguments the import cannot take are refused by the parser (2), not as a file (1).
    good = str(files["technicians"])
    for wrong, said in (
        (["nosuchkind", good], "unknown kind 'nosuchkind'"),
        (["technicians", good, "--encoding", "nosuch"], "unknown encoding 'nosuch'"),
        (["technicians", good, "--encoding", "base64"], "not a text encoding"),
        (["technicians", good, "--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["import", *wrong])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_export_kind_writes_the_import_format(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_history(tmp_path / "files", 5)
    for kind in ("service_points", "technicians"):
        assert main(["import", kind, str(files[kind]), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "technicians-export.csv"
    assert main(["export", "--kind", "technicians", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "kind": "technicians",
        "rows": 24,
        "left_out": 0,
        "left_out_examples": [],
        "not_carried": 0,
        "not_carried_examples": [],
    }
    # Kept beside the file too (as --help says): the record of what was left out.
    assert json.loads(Path(f"{out}.summary.json").read_text()) == printed
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert (
        rows[0]["working_hours"] == "mon-sun 00:00-23:59" and rows[0]["timezone"] == "Asia/Shanghai"
    )
    lines = tmp_path / "points.jsonl"
    assert (
        main(["export", "--kind", "service-points", "--format", "jsonl", "--out", str(lines)]) == 0
    )
    first = json.loads(lines.read_text().splitlines()[0])
    assert first["id"] == "hq" and first["level"] == "headquarters"


def test_sigterm_stops_an_import_with_the_batch_being_written_counted(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`timeout`, systemd, Kubernetes: exit 143, and the summary says what the ledger
    holds — the batch the database was writing when the signal came is in it."""
    assert threading.current_thread() is threading.main_thread()  # signals reach it
    files = write_history(tmp_path / "files", 60)
    for kind in ("service_points", "technicians", "parts", "locations", "stock", "usage"):
        assert main(["import", kind, str(files[kind]), "--quiet"]) == 0
    capsys.readouterr()
    original, calls = commit.Committer.commit_batch, []

    def signalled_while_writing_the_second(self: commit.Committer, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)  # the cancellation reaches the import while this batch commits
        return original(self, *args)

    monkeypatch.setattr(commit.Committer, "commit_batch", signalled_while_writing_the_second)
    tickets = str(files["tickets"])
    assert main(["import", "tickets", tickets, "--quiet", "--batch-size", "10"]) == 143
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and "ticketline: terminated" in err
    assert summary["imported"] == 20 and len(calls) == 2
    written = summary["ledger_position"]["after"] - summary["ledger_position"]["before"]
    assert summary["events"] == written
    monkeypatch.setattr(commit.Committer, "commit_batch", original)
    # Stopped while validating (nothing written yet): interrupted too, not "refused".
    from shared.app.importing import engine

    validate = engine.validate

    async def stopped_while_validating(*args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(5)
        return await validate(*args)

    monkeypatch.setattr(engine, "validate", stopped_while_validating)
    more = write_history(tmp_path / "more", 5)["tickets"]
    assert main(["import", "tickets", str(more), "--quiet"]) == 143
    assert json.loads(capsys.readouterr().out)["status"] == "interrupted"
    monkeypatch.setattr(engine, "validate", validate)
    assert main(["import", "tickets", tickets, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 40  # resumed after the 20


def test_the_files_an_import_or_export_writes_are_its_own(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A report or summary path that is the database, a key, the input, a pipe, or a
    link planted beside the file: refused or replaced, never written through (or removed);
    what it writes is its owner's only (a tickets export holds personal data)."""
    files = write_history(tmp_path / "files", 3)
    points = files["service_points"]
    before = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    for report in (
        data_dir / "ticketline.db",
        data_dir / "personal-data-master.key",
        points,
        Path("/dev/null"),
    ):
        args = ["import", "service_points", str(points), "--dry-run", "--report", str(report)]
        assert main(args) == 2, report
        assert "--report" in capsys.readouterr().err
    assert points.exists() and Path("/dev/null").exists()
    assert {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()} == before
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    planted = Path(f"{points}.errors.csv")
    planted.symlink_to(precious)
    assert main(["import", "service_points", str(points), "--dry-run"]) == 2
    assert precious.read_text() == "keep me"
    planted.unlink()
    # A clean run removes a report an earlier run left, never another file at that path.
    mistyped = tmp_path / "notes.csv"
    mistyped.write_text("my notes\n")
    assert (
        main(["import", "service_points", str(points), "--dry-run", "--report", str(mistyped)]) == 0
    )
    assert mistyped.read_text() == "my notes\n"
    # A key configured outside the data directory is the platform's too.
    kept_apart = tmp_path / "secrets" / "master.key"
    kept_apart.parent.mkdir()
    kept_apart.write_text("0" * 64)
    monkeypatch.setenv("TICKETLINE_PRIVACY_MASTER_KEY_FILE", str(kept_apart))
    assert main(["import", "service_points", str(points), "--report", str(kept_apart)]) == 2
    monkeypatch.delenv("TICKETLINE_PRIVACY_MASTER_KEY_FILE")
    assert kept_apart.read_text() == "0" * 64
    # An export's summary and draft names: a link there is replaced, not written through.
    out = tmp_path / "parts.csv"
    Path(f"{out}.summary.json").symlink_to(precious)
    killed = tmp_path / f".{out.name}.999999999.dead.partial"  # a run killed mid-way
    killed.write_text("half")
    os.utime(killed, (0, 0))
    assert main(["import", "service_points", str(points), "--quiet"]) == 0
    assert main(["export", "--kind", "service_points", "--out", str(out)]) == 0
    assert precious.read_text() == "keep me" and not killed.exists()
    assert not Path(f"{out}.summary.json").is_symlink()
    assert (out.stat().st_mode & 0o777, Path(f"{out}.summary.json").stat().st_mode & 0o777) == (
        0o600,
        0o600,
    )
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["import", "service_points", "/dev/zero"])
    assert "not a regular file" in capsys.readouterr().err
    bad = ["import", "service_points", str(points), "--operator", "ops\x1b[31m\nbob"]
    assert main(bad) == 2
    assert "--operator" in capsys.readouterr().err

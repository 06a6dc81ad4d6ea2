"""The bench harness keeps working: the load generator against the bare endpoint process,
a tiny limit, and the report. No timing is asserted — only that things are counted."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bench.limits import sqlite_insert_per_transaction
from bench.loadgen import json_post, run_load
from bench.measure import Result, combine, percentile
from bench.processes import start_bare_endpoint
from bench.report import Report


async def test_load_generator_counts_answers_of_the_bare_endpoint(tmp_path) -> None:
    db = tmp_path / "bare.db"
    with start_bare_endpoint(db) as bare:
        make = json_post(
            "/tickets", bare.host, bare.port, headers={"Authorization": "Bearer not-checked"}
        )
        result = await run_load(
            bare.host,
            bare.port,
            make,
            requests=50,
            seconds=10,
            concurrency=4,
            warmup_requests=6,
            server_cpu=bare.cpu_seconds,
        )
        missing = await run_load(
            bare.host,
            bare.port,
            json_post("/nowhere", bare.host, bare.port),
            requests=5,
            seconds=10,
            concurrency=2,
            warmup_requests=0,
        )
    assert (result.count, result.errors) == (50, 0)
    assert result.detail["statuses"] == {"201": 50}
    assert result.detail["server_cpu_seconds"] >= 0
    assert result.p50 is not None and result.p50 <= result.p95 <= result.p99  # type: ignore[operator]
    assert (missing.count, missing.errors, missing.detail["statuses"]) == (0, 5, {"404": 5})
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT idempotency_key, body FROM requests").fetchall()
    assert len(rows) == 56  # warm-up included, one row per request
    assert len({key for key, _ in rows}) == 56
    assert json.loads(rows[0][1])["customer"]["name"] == "Li Wei"

    limit = await sqlite_insert_per_transaction(tmp_path / "limit.db", 20, max_seconds=5)
    assert limit.count == 20 and len(limit.latencies) == 20

    report = Report(settings={"smoke": True})
    section = report.section("HTTP", reference_header="bare endpoint")
    row = section.compare("POST /tickets", combine([result, result]), result, unit="req/s")
    section.compare("  latency", result, result, metric="p99")
    report.section("SQLite").limit_only("limit: insert/transaction", limit, unit="events/s")
    report.machine.finish(1.0)
    text = report.render()
    assert row.ratio is not None and abs(row.ratio - 1.0) < 1e-9
    assert "POST /tickets" in text and "bare endpoint" in text and "machine: " in text
    out = tmp_path / "report.json"
    report.write_json(out)
    dumped = json.loads(out.read_text())
    assert dumped["sections"][0]["rows"][0]["value_result"]["count"] == 100
    assert dumped["machine"]["load_end"] is not None


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([], 50) is None
    assert Result(0, 0.0).rate == 0.0


async def test_console_pages_bench_runs_end_to_end_at_a_tiny_size(tmp_path) -> None:
    """bench/console_pages.py: a 200-ticket history imported and caught up, every page of
    both callers asked for once after the warm-up, and the section rendered; then the
    auditor's replay of every projection on that history."""
    from bench.console_pages import (
        ROLES,
        TARGET_MS,
        measure_console_pages,
        pages,
        report_rows,
        seed,
    )

    seeded = await seed(tmp_path, 200)
    assert seeded.events > 200 and seeded.ticket_ids
    times = await measure_console_pages(seeded, repeats=1, max_seconds=60, verify_batches=1)
    assert times.rounds == 1
    assert len(times.pages) == sum(len(pages(seeded, region)) for _, _, region in ROLES)
    for (who, label), result in times.pages.items():
        statuses = result.detail["failed_statuses"]
        # At 200 tickets some lists have no second page (status 0): nothing else fails.
        assert set(statuses) <= {0}, (who, label, statuses)
        if not statuses:
            assert result.count == 1 and result.detail["kB"] > 0, (who, label)
    assert times.verify_batch is not None and times.verify_batch.count == 1
    report = Report()
    report_rows(report.section("Console pages", value_header="p95"), times)
    text = report.render()
    assert "HQ: board" in text and "east: audit" in text and f"{TARGET_MS:.0f}" in text
    assert "excluded from the target" in text
    # bench/replay_all.py on the same history: the CLI's replay of every projection.
    from bench.replay_all import bench_replay_all

    await bench_replay_all(report, seeded.data_dir, seeded.tickets)
    text = report.render()
    assert "identical to live" in text and "feedback_compliance" in text, text
    # A live table that drifted: the replay exits 1, and the figure says so.
    import sqlite3

    with sqlite3.connect(seeded.data_dir / "ticketline.db") as live:
        live.execute("UPDATE ticket_state SET urgency = 'drifted' WHERE rowid = 1")
    await bench_replay_all(report, seeded.data_dir, seeded.tickets)
    assert "DIFFERENCES from live" in report.render()


async def test_import_bench_runs_end_to_end_at_a_tiny_size(tmp_path) -> None:
    """bench/imports.py: a tiny generated history imported (all or nothing, skip-invalid,
    a smaller one) and appended again as the limit, with the imported customers' keys."""
    from types import SimpleNamespace

    from bench.imports import bench_import

    report = Report()
    args = SimpleNamespace(import_tickets=60, import_small=20)
    await bench_import(report, tmp_path, args, lambda _message: None)
    text = report.render()
    assert "FAILED" not in text
    assert "import tickets, all or nothing" in text and "peak memory" in text


@pytest.mark.kafka
async def test_outage_bench_runs_end_to_end_at_a_tiny_size(tmp_path) -> None:
    """bench/outage.py: the scaled topology as processes, 1 / 3 / 1 s of the phases under
    the callers, everything stopped, and the section rendered."""
    from types import SimpleNamespace

    from bench.outage import bench_outage

    report = Report()
    await bench_outage(report, tmp_path, SimpleNamespace(outage_seconds=3), lambda _m: None)
    text = report.render()
    assert "broker stopped: tickets opened" in text and "broker back: tickets opened" in text
    stopped, back = (r for r in report.sections[0].rows if r.figure.endswith("tickets opened"))
    for row in (stopped, back):
        assert row.value_result is not None and row.value_result["count"] > 0, text
        assert row.reference_result is not None and row.reference_result["count"] > 0, text

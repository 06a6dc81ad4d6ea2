"""Signed chain-head checkpoints: a history rewritten or truncated after a checkpoint was
published fails `verify --checkpoints`, even when whoever did it recomputed every hash
and the position counter; an untouched ledger passes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, delete, select, text, update

from shared.app.checkpoints import checkpoint_once, read_held, signing_key
from shared.app.cli import main
from shared.app.platform import Platform
from shared.eventstore.checkpoints import (
    CHECKPOINT_STREAM,
    LedgerHeads,
    StreamHeads,
    bucket_of,
    leaf,
)
from shared.eventstore.tables import event_sequence, events, outbox
from shared.eventstore.verify import VerificationReport, verify_ledger
from shared.kernel.events.envelope import GENESIS_HASH, EventEnvelope, canonical_json
from shared.readmodels.ticket_state import ticket_state, ticket_tail_problems
from tests.support.factories import diagnosed, new_ticket_id, received
from tests.support.ledger import append


async def ticket(platform: Platform, n: int) -> str:
    tid = new_ticket_id()
    await append(platform, tid, 0, [received(n)])
    await append(platform, tid, 1, [diagnosed()])
    return tid


async def checkpoint(platform: Platform) -> EventEnvelope:
    written = await checkpoint_once(platform, signing_key(platform.settings))
    assert written is not None
    return written


async def history(platform: Platform, tmp_path: Path) -> tuple[list[str], Path]:
    """Tickets, two checkpoints between them, and the JSON lines a regional center's
    subscriber saved meanwhile (every event; the checkpoints among them)."""
    ids = [await ticket(platform, 1), await ticket(platform, 2)]  # positions 1-4
    first = await checkpoint(platform)  # covers 1-4, at 5
    assert (first.position, first.payload["position"], first.payload["streams"]) == (5, 4, 2)
    assert first.stream_id == CHECKPOINT_STREAM and first.region is None
    ids.append(await ticket(platform, 3))  # 6-7
    second = await checkpoint(platform)  # covers 1-7 (the first checkpoint too), at 8
    assert (second.payload["position"], second.payload["streams"]) == (7, 4)
    assert await checkpoint_once(platform, signing_key(platform.settings)) is None  # nothing new
    ids.append(await ticket(platform, 4))  # 9-10
    everything = await platform.db.read(lambda c: platform.store.read_all(c))
    saved = tmp_path / "east-subscriber.jsonl"
    saved.write_text("".join(canonical_json(e.to_json_dict()) + "\n" for e in everything))
    return ids, saved


async def verify(platform: Platform, saved: Path | None = None) -> VerificationReport:
    held = read_held(saved, signing_key(platform.settings).public_key()) if saved else None
    if held is not None:
        assert held.problems == [] and len(held.checkpoints) == 2
    return await platform.db.read(
        lambda c: verify_ledger(
            c,
            platform.store,
            checkpoints=held.checkpoints if held else (),
            stop_at_first=False,
            tails=[ticket_tail_problems],
        )
    )


async def test_an_untouched_ledger_passes(platform: Platform, tmp_path: Path) -> None:
    _, saved = await history(platform, tmp_path)
    report = await verify(platform, saved)
    assert report.ok, report.broken
    assert (report.events_checked, report.checkpoints_checked) == (10, 2)


async def test_regional_readers_receive_the_checkpoints(platform: Platform) -> None:
    """The console's live stream reads events as intake's stream does: a regional caller
    gets its region's, the ledger's checkpoints and the erasures and holds of customers
    with tickets in the region, which belong to no region (an SSE subscriber never learnt
    of an erasure)."""
    from services.console.queries import events_after
    from shared.http.streams import read_after
    from shared.kernel.events.customers import LegalHoldPlaced, customer_stream_id
    from shared.kernel.events.parts import PartCatalogued
    from shared.kernel.reach import Reach

    tid = new_ticket_id()
    await append(platform, tid, 0, [received(1), diagnosed()], region="east")  # 1-2
    written = await checkpoint(platform)
    customer_id = await platform.db.read(
        lambda c: c.execute(
            select(ticket_state.c.customer_id).where(ticket_state.c.ticket_id == tid)
        ).scalar_one()
    )
    hold = LegalHoldPlaced(customer_id=customer_id, reason="court order 7")
    await append(platform, customer_stream_id(customer_id), 0, [hold])  # 4: east's customer
    part = PartCatalogued(part_number="P-1", name="pump", unit_cost=1, return_required=False)
    await append(platform, "P-1", 0, [part])  # 5: headquarters' catalogue, not the regions'
    for region, expected in (("east", [1, 2, 3, 4]), ("west", [3])):
        rows = await platform.db.read(lambda c, r=region: events_after(c, Reach(region=r), 0, 100))
        assert [r.position for r in rows] == expected and written.position == 3
        streamed = (await read_after(platform, 0, region, [], 100)).found
        assert [e.position for e in streamed] == expected


async def test_a_truncated_history_fails_even_with_the_counter_moved_back(
    platform: Platform, tmp_path: Path
) -> None:
    _, saved = await history(platform, tmp_path)

    def truncate(conn: Connection) -> None:
        """Everything after the first checkpoint removed, the counter set back: the hash
        chains and the counter agree again."""
        conn.execute(delete(outbox).where(outbox.c.position > 5))
        conn.execute(delete(events).where(events.c.position > 5))
        conn.execute(update(event_sequence).values(last_position=5))

    await platform.db.write(truncate)
    # The tickets' state rows remember the versions their streams reached...
    assert {b.kind for b in (await verify(platform)).broken} == {"stream_tail"}
    await platform.db.write(align_ticket_state)  # ...which a forger rewrites too
    assert (await verify(platform)).ok  # without checkpoints nothing shows
    report = await verify(platform, saved)
    assert not report.ok
    (link,) = report.broken
    assert link.kind == "checkpoint" and link.position == 7
    assert "truncated" in link.detail


def align_ticket_state(conn: Connection) -> None:
    """The tickets' state rows made to agree with a cut ledger (each ticket's version its
    stream's last), as an operator hiding the cut would."""
    conn.execute(
        text("DELETE FROM ticket_state WHERE ticket_id NOT IN (SELECT stream_id FROM events)")
    )
    conn.execute(
        text(
            "UPDATE ticket_state SET version = (SELECT MAX(stream_version) FROM events "
            "WHERE stream_id = ticket_state.ticket_id)"
        )
    )


def rewrite(
    conn: Connection, platform: Platform, stream_id: str, version: int, change: Callable[..., Any]
) -> None:
    """Change one event and recompute its stream's chain from there on, as an operator
    with write access to the database could."""
    stream = platform.store.read_stream(conn, stream_id)
    prev = stream[version - 2].hash if version > 1 else GENESIS_HASH
    for event in stream[version - 1 :]:
        payload = change(dict(event.payload)) if event.stream_version == version else event.payload
        fixed = EventEnvelope.model_validate(
            {**event.model_dump(), "payload": payload, "prev_hash": prev}
        )
        new_hash = fixed.computed_hash()
        conn.execute(
            update(events)
            .where(events.c.position == event.position)
            .values(payload=canonical_json(payload), prev_hash=prev, hash=new_hash)
        )
        prev = new_hash


async def test_a_history_rewritten_with_recomputed_hashes_fails(
    platform: Platform, tmp_path: Path
) -> None:
    ids, saved = await history(platform, tmp_path)

    def cheaper_repair(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "complexity": "simple"}

    await platform.db.write(lambda c: rewrite(c, platform, ids[0], 2, cheaper_repair))
    assert (await verify(platform)).ok  # every chain is consistent again
    report = await verify(platform, saved)
    assert not report.ok
    assert {link.kind for link in report.broken} == {"checkpoint"}
    assert [link.position for link in report.broken] == [4, 7]  # both checkpoints
    assert all("rewritten" in link.detail for link in report.broken)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_plain_verify_holds_the_history_against_the_ledgers_last_checkpoint(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Without a held copy, `ticketline verify` (where the signing key is) checks the
    ledger's own last checkpoint: whoever rewrites the history without the key cannot
    sign a new one, and a checkpoint edited to agree is no longer signed."""
    ids, _ = await history(platform, tmp_path)
    monkeypatch.setenv("DATABASE_URL", platform.settings.resolved_database_url)
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("TICKETLINE_LOG_FORMAT", "text")

    async def plain() -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["verify"])
        return code, json.loads(capsys.readouterr().out)

    code, out = await plain()
    assert code == 0 and out["ledger_checkpoint_checked"] is True, out
    # Which checkpoint it was: an auditor sees how far behind the head it stands.
    last = await platform.db.read(lambda c: platform.store.read_stream(c, CHECKPOINT_STREAM)[-1])
    assert out["ledger_checkpoint_position"] == last.payload["position"], out

    def cheaper_repair(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "complexity": "simple"}

    await platform.db.write(lambda c: rewrite(c, platform, ids[0], 2, cheaper_repair))
    code, out = await plain()
    assert code == 1 and [b["kind"] for b in out["broken"]] == ["checkpoint"], out
    assert out["broken"][0]["position"] == 7  # the last checkpoint's
    # The checkpoint made to agree (its digest, its hash): no longer the platform's.
    forged = await platform.db.read(lambda c: platform.store.read_stream(c, CHECKPOINT_STREAM)[-1])
    await platform.db.write(
        lambda c: rewrite(
            c, platform, CHECKPOINT_STREAM, forged.stream_version, lambda p: {**p, "streams": 5}
        )
    )
    code, out = await plain()
    assert code == 1 and out["ledger_checkpoint_checked"] is False, out
    assert "is not signed by the platform key" in out["ledger_checkpoint_problems"][0]
    # Where no signing key is, it says what it could not check (not a silent omission).
    (platform.settings.data_dir / "checkpoint-signing.pem").rename(tmp_path / "moved.pem")
    await asyncio.to_thread(main, ["verify"])
    said = capsys.readouterr()
    assert "ledger_checkpoint_checked" not in json.loads(said.out)
    assert "no checkpoint signing key here" in said.err, said.err


async def test_a_forged_or_foreign_checkpoint_is_refused(
    platform: Platform, tmp_path: Path
) -> None:
    _, saved = await history(platform, tmp_path)
    lines = saved.read_text().splitlines()
    forged = []
    for line in lines:
        document = json.loads(line)
        if document["event_type"] == "LedgerCheckpointed":
            document["payload"]["streams"] += 1
            envelope = EventEnvelope.model_validate(document)
            document["hash"] = envelope.computed_hash()  # a consistent, unsigned change
        forged.append(canonical_json(document))
    saved.write_text("\n".join(forged) + "\n")
    held = read_held(saved, signing_key(platform.settings).public_key())
    assert held.checkpoints == [] and len(held.problems) == 2
    assert all("signature" in p for p in held.problems)
    other = read_held(saved, Ed25519PrivateKey.generate().public_key())
    assert other.checkpoints == []


async def test_a_line_that_is_not_text_is_a_problem_of_the_file(
    platform: Platform, tmp_path: Path
) -> None:
    _, saved = await history(platform, tmp_path)
    with saved.open("ab") as out:
        out.write(b"\xff\xfe garbage\n")
    held = read_held(saved, signing_key(platform.settings).public_key())
    assert len(held.checkpoints) == 2 and held.problems[-1].endswith(": not UTF-8 text")
    with saved.open("ab") as out:  # JSON, but no event: not the stream's output
        out.write(b'[1, 2]\n"LedgerCheckpointed"\n')
    held = read_held(saved, signing_key(platform.settings).public_key())
    last = len(saved.read_bytes().splitlines())
    assert held.problems[-2:] == [
        f"line {n}: not a JSON object (an event)" for n in (last - 1, last)
    ]


async def test_the_jobs_heads_read_only_new_events_and_state_what_a_fresh_read_does(
    platform: Platform,
) -> None:
    """The job keeps its heads between passes; what it signs is the state a reading of the
    whole ledger gives, also when the ledger under it was restored to another history."""

    async def state(heads: LedgerHeads) -> object:
        return await platform.db.read(
            lambda c: heads.advance(c, int(platform.store.last_position(c)))
        )

    kept = LedgerHeads()
    await ticket(platform, 1)
    assert await state(kept) == await state(LedgerHeads())
    tid = await ticket(platform, 2)
    await append(platform, tid, 2, [diagnosed()])  # a stream that moves on
    assert await state(kept) == await state(LedgerHeads())
    # Restored: the last pass's event is another one now, and the ledger is shorter.
    await platform.db.write(lambda c: c.execute(delete(events).where(events.c.position > 3)))
    await platform.db.write(
        lambda c: c.execute(update(events).where(events.c.position == 3).values(hash="f" * 64))
    )
    assert await state(kept) == await state(LedgerHeads())
    last = await platform.db.read(lambda c: int(platform.store.last_position(c)))
    await platform.db.write(  # the event the last pass ended at, another one now
        lambda c: c.execute(update(events).where(events.c.position == last).values(hash="e" * 64))
    )
    await ticket(platform, 3)
    assert await state(kept) == await state(LedgerHeads())


def test_streams_digest_is_order_free_and_moves_with_any_head() -> None:
    a, b = StreamHeads(), StreamHeads()
    for sid in ("t-1", "t-2", "t-3"):
        a.update(sid, 1, "0" * 64)
    for sid in ("t-3", "t-1", "t-2"):
        b.update(sid, 1, "0" * 64)
    assert a.digest() == b.digest() and len(a) == 3
    b.update("t-2", 2, "1" * 64)
    assert a.digest() != b.digest()
    assert 0 <= bucket_of("t-1") < 256


@pytest.mark.parametrize("stream_id", ["t-1", 'é"\\\u2028\x00😀', "ticket:" + "9" * 57])
def test_leaf_and_bucket_are_the_documented_spelling(stream_id: str) -> None:
    # leaf() and bucket_of() are hand-made for speed: they must stay the scheme's words.
    assert leaf(stream_id, 12, "ab" * 32) == canonical_json([stream_id, 12, "ab" * 32]) + "\n"
    digest = hashlib.sha256(stream_id.encode("utf-8")).hexdigest()
    assert bucket_of(stream_id) == int(digest[:2], 16)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_cli_verify_with_checkpoints(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _, saved = await history(platform, tmp_path)
    monkeypatch.setenv("DATABASE_URL", platform.settings.resolved_database_url)
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("TICKETLINE_LOG_FORMAT", "text")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["verify", "--checkpoints", str(saved)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoints_checked"] == 2
    assert await asyncio.to_thread(main, ["checkpoint", "--public-key"]) == 0
    key = tmp_path / "platform.pem"
    key.write_text(capsys.readouterr().out)
    await platform.db.write(lambda c: c.execute(delete(events).where(events.c.position > 7)))
    await platform.db.write(lambda c: c.execute(update(event_sequence).values(last_position=7)))
    await platform.db.write(align_ticket_state)
    code = await asyncio.to_thread(
        main, ["verify", "--checkpoints", str(saved), "--public-key", str(key)]
    )
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert [link["kind"] for link in out["broken"]] == ["checkpoint"]
    assert "not in the ledger as it was published" in out["broken"][0]["detail"]
    # A file without a checkpoint checks nothing: not "ok". A key without a file, or a
    # key file that is not one: a message, not a traceback.
    empty = tmp_path / "none.jsonl"
    empty.write_text('{"event_type": "TicketReceived"}\n')
    assert await asyncio.to_thread(main, ["verify", "--checkpoints", str(empty)]) == 1
    assert "no checkpoint event" in json.dumps(json.loads(capsys.readouterr().out))
    assert await asyncio.to_thread(main, ["verify", "--public-key", str(key)]) == 2
    assert (
        await asyncio.to_thread(
            main, ["verify", "--checkpoints", str(saved), "--public-key", str(empty)]
        )
        == 2
    )
    assert "Traceback" not in capsys.readouterr().err


def test_the_public_key_is_printed_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`checkpoint --public-key` reads the key file only: also where the database is not
    there or not writable (an auditor's read-only copy)."""
    from shared.app.config import Settings

    signing_key(Settings(data_dir=tmp_path))  # the key, and no database beside it
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["checkpoint", "--public-key"]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PUBLIC KEY-----")

"""Regional subscriptions over SSE against a real uvicorn server, and the subscriber CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from services.intake.app import create_app
from shared.app.platform import Platform
from shared.app.subscribe import subscribe_http
from shared.eventstore.ledger import NO_STREAM
from shared.http.streams import read_after
from shared.kernel.events.customers import CustomerDataErased, LegalHoldPlaced
from shared.kernel.events.registry import payload_class
from shared.readmodels.ticket_state import ticket_state
from tests.support.auth import headers_for, token_for
from tests.support.factories import diagnosed, new_ticket_id, received
from tests.support.ledger import append
from tests.support.lifecycle import Lifecycle
from tests.support.servers import serve_app


async def open_tickets(platform: Platform, regions: list[str], start: int = 0) -> list[str]:
    ids = []
    for n, region in enumerate(regions, start=start):
        tid = new_ticket_id()
        ids.append(tid)
        await append(platform, tid, NO_STREAM, [received(n, region=region)], region=region)
        await append(platform, tid, 1, [diagnosed()], region=region)
    return ids


AUDITOR = headers_for("auditor")


async def collect(url: str, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    out: list[dict] = []
    kwargs.setdefault("headers", AUDITOR)
    await asyncio.wait_for(subscribe_http(url, emit=out.append, **kwargs), 20)
    return out


async def test_resume_across_server_restart_has_no_gap_or_duplicate(
    platform: Platform, tmp_path
) -> None:
    east = await open_tickets(platform, ["east", "west", "east", "east"])
    position_file = tmp_path / "east.position"
    options = {
        "region": "east",
        "types": [],
        "from_beginning": True,
        "position_file": position_file,
    }
    async with serve_app(create_app(platform)) as url:
        first = await collect(url, max_events=4, **options)
    # While the server is down, more happens.
    later = await open_tickets(platform, ["west", "east"], start=10)
    async with serve_app(create_app(platform)) as url:
        rest = await collect(url, max_events=4, **options)
    seen = first + rest
    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions))  # no duplicate, in order
    assert {e["region"] for e in seen} == {"east"}
    expected = [tid for tid in east if tid != east[1]] + [later[1]]
    assert sorted({e["stream_id"] for e in seen}) == sorted(expected)
    assert len(seen) == 8  # 4 east tickets × (received, diagnosed): nothing missing
    everything = await platform.db.read(lambda c: platform.store.read_all(c))
    assert positions == [e.position for e in everything if e.region == "east"]


class Stopped(Exception):
    pass


async def followed_until_stopped(platform: Platform, position_file, emit) -> None:  # type: ignore[no-untyped-def]
    """East's stream followed until a SIGTERM (``emit`` sends it) stops the subscriber."""

    def stop(_signum: int, _frame: object) -> None:
        raise Stopped

    before = signal.signal(signal.SIGTERM, stop)
    try:
        async with serve_app(create_app(platform)) as url:
            with pytest.raises(Stopped):
                await subscribe_http(
                    url,
                    region="east",
                    types=[],
                    from_beginning=True,
                    position_file=position_file,
                    emit=emit,
                    headers=AUDITOR,
                )
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_stop_while_an_event_is_passed_on_waits_for_its_position(
    platform: Platform, tmp_path
) -> None:
    """SIGTERM (or Ctrl-C) landing between printing an event and saving its position
    would make the next run print it again."""
    assert threading.current_thread() is threading.main_thread()  # signals reach it
    await open_tickets(platform, ["east", "east"])
    position_file, out = tmp_path / "east.position", []

    def emit(envelope: dict) -> None:
        out.append(envelope)
        if len(out) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered at once, mid-event

    await followed_until_stopped(platform, position_file, emit)
    kept = f"{out[1]['position']} {out[1]['hash']} east|*\n"
    assert len(out) == 2 and position_file.read_text() == kept


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_stop_while_a_line_cannot_be_printed_stops_after_a_grace(
    platform: Platform, tmp_path, monkeypatch
) -> None:
    """Its reader stalled (a pipe nobody reads): the stop does not wait for the reader —
    the line is not passed on, its position not saved (the next run prints it)."""
    from shared.app import subscribe

    monkeypatch.setattr(subscribe, "PRINT_GRACE_SECONDS", 0.3)
    await open_tickets(platform, ["east", "east"])
    position_file, out = tmp_path / "east.position", []

    def emit(envelope: dict) -> None:
        if out:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # blocked: as a write to a full pipe
        out.append(envelope)

    started = time.monotonic()
    await followed_until_stopped(platform, position_file, emit)
    assert time.monotonic() - started < 10
    assert len(out) == 1 and position_file.read_text().split()[0] == str(out[0]["position"])


async def test_a_filtered_stream_moves_past_what_it_read_without_a_match(
    platform: Platform,
) -> None:
    """A center waiting for a rare type reads each event once, not every event since its
    last match at every poll; what comes after is still found, and a full batch stops at
    its last event."""
    await open_tickets(platform, ["east", "west"])  # positions 1-4
    rare = await read_after(platform, 0, None, ["LegalHoldPlaced"], 100)
    assert (rare.found, rare.read_to) == ([], 4)
    north = await read_after(platform, 0, "north", [], 100)
    assert (north.found, north.read_to) == ([], 4)
    (tid,) = await open_tickets(platform, ["north"], start=5)  # 5-6
    later = await read_after(platform, rare.read_to, "north", ["TicketReceived"], 100)
    assert [(e.stream_id, e.position) for e in later.found] == [(tid, 5)] and later.read_to == 6
    full = await read_after(platform, 0, None, ["TicketReceived"], 2)
    assert [e.position for e in full.found] == [1, 3] and full.read_to == 3


async def test_filter_by_type_and_start_from_now(platform: Platform) -> None:
    await open_tickets(platform, ["east", "east"])
    async with serve_app(create_app(platform)) as url:
        diagnosed_only = await collect(
            url,
            region=None,
            types=["TicketDiagnosed"],
            from_beginning=True,
            position_file=None,
            max_events=2,
        )
        assert [e["event_type"] for e in diagnosed_only] == ["TicketDiagnosed"] * 2

        async def newcomer() -> list[dict]:
            return await collect(
                url,
                region="north",
                types=[],
                from_beginning=False,
                position_file=None,
                max_events=2,
            )

        task = asyncio.create_task(newcomer())
        await asyncio.sleep(0.5)  # the subscriber starts "from now"
        north: list[str] = []
        for n in range(20):  # a subscriber that connected late gets a later ticket's events
            north += await open_tickets(platform, ["north"], start=50 + n)
            if (await asyncio.wait({task}, timeout=1))[0]:
                break
        live = await task
    assert {e["event_type"] for e in live} == {"TicketReceived", "TicketDiagnosed"}
    assert {e["stream_id"] for e in live} <= set(north)


async def test_a_regions_stream_shows_a_customers_erasure_and_holds_as_its_own_ids(
    platform: Platform, life: Lifecycle
) -> None:
    """A region's caller learns of a customer's erasure and legal holds once one of the
    customer's tickets had an event in the region before them (it holds their data; also
    after a correction moved the ticket away) — ids only, and of the tickets those it
    held. A region the customer came to later does not get the earlier hold, then or in
    a replay; one the customer never was in hears nothing. Unfiltered, events are whole."""
    east, west = await life.open(region="east"), await life.open(region="west")
    customer_id = await platform.db.read(
        lambda c: c.execute(
            select(ticket_state.c.customer_id).where(ticket_state.c.ticket_id == east)
        ).scalar_one()
    )
    assert customer_id
    stream_id = f"customer-{customer_id}"
    held = LegalHoldPlaced(customer_id=customer_id, reason="court case 12")
    await append(platform, stream_id, NO_STREAM, [held])
    north = await life.open(region="north")  # the same customer, after the hold
    moved = {
        "address": {"line": "2 South St", "city": "Xiamen", "region": "south"},
        "reason": "moved",
    }
    assert (await life.intake.patch(f"/tickets/{west}/contact", json=moved)).status_code == 200
    erased = CustomerDataErased(
        customer_id=customer_id, request_id="DSR-9", legal_basis="PIPL", tickets=[east, west, north]
    )
    await append(platform, stream_id, 1, [erased])
    customers = ["LegalHoldPlaced", "CustomerDataErased"]

    async def seen(region: str) -> list[dict]:
        read = await read_after(platform, 0, region, customers, 100)
        return [e.payload for e in read.found]

    # The text for the whole platform withheld, in the fields of the published schema.
    hold_only = {"customer_id": customer_id, "reason": "[withheld]"}

    def erasure(*tickets: str) -> dict:
        withheld = {"request_id": "[withheld]", "legal_basis": "[withheld]"}
        return {
            "customer_id": customer_id,
            **withheld,
            "source": "request",
            "tickets": list(tickets),
        }

    assert await seen("east") == [hold_only, erasure(east)]
    assert await seen("west") == [hold_only, erasure(west)]  # held it before the move
    assert await seen("south") == [erasure(west)]
    assert await seen("north") == [erasure(north)]  # came after the hold: never gets it
    assert await seen("nowhere") == []
    async with serve_app(create_app(platform)) as url:
        headers = headers_for("regional_center", region="east")
        over_http = await collect(
            url, region="east", types=customers, from_beginning=True, position_file=None,
            max_events=2, headers=headers,
        )  # fmt: skip
        whole = await collect(
            url, region=None, types=customers, from_beginning=True, position_file=None,
            max_events=2,
        )  # fmt: skip
    assert [e["payload"] for e in over_http] == [hold_only, erasure(east)]
    for reduced in over_http:  # still an event of its type and version (docs/contract)
        payload_class(reduced["event_type"]).model_validate(reduced["payload"])
    assert whole[1]["payload"]["tickets"] == [east, west, north] and whole[0]["payload"]["reason"]


async def test_bad_stream_requests_are_422(platform: Platform) -> None:
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake.test", headers=AUDITOR
    ) as client:
        for types in ("TicketVanished", "", ",", "TicketReceived,,", "TicketReceived,"):
            bad_type = await client.get("/streams/events", params={"types": types})
            assert bad_type.status_code == 422, types
            assert bad_type.json()["errors"][0]["field"] == "types"
        bad_id = await client.get("/streams/events", headers={"Last-Event-ID": "abc"})
        assert bad_id.status_code == 422
        bad_query = await client.get("/streams/events", params={"lastEventId": "abc"})
        assert bad_query.json()["errors"][0]["field"] == "lastEventId"


async def test_a_position_past_the_ledgers_end_is_refused_not_followed(platform: Platform) -> None:
    """A position from another ledger (a restore from an older backup) would have the
    stream skip every event up to it in silence: 409, naming the ledger's last position."""
    await open_tickets(platform, ["east"])
    head = await platform.db.read(platform.store.last_position)
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake.test", headers=AUDITOR
    ) as client:
        ahead = await client.get("/streams/events", headers={"Last-Event-ID": str(head + 5)})
        assert ahead.status_code == 409 and ahead.json()["type"].endswith("position-ahead")
        assert ahead.json()["errors"][0]["field"] == "Last-Event-ID"
        assert f"last position, {head}" in ahead.json()["detail"]
        asked = await client.get("/streams/events", params={"from_position": head + 1})
        assert asked.json()["errors"][0]["field"] == "from_position"


async def test_the_subscriber_stops_at_a_position_from_another_ledger(
    platform: Platform, tmp_path
) -> None:
    import pytest

    from shared.app.subscribe import AccessRefused

    position = tmp_path / "position"
    position.write_text("99\n")
    async with serve_app(create_app(platform)) as url:
        with pytest.raises(AccessRefused, match="409 .*past the ledger's last position, 0"):
            await collect(
                url, region=None, types=[], from_beginning=False, position_file=position,
                max_events=1,
            )  # fmt: skip


async def test_a_subscriber_refuses_a_ledger_that_grew_past_it_from_another_history(
    platform: Platform, tmp_path
) -> None:
    """Restored from an older backup, the ledger grows past the position a subscriber kept
    (the position-ahead guard no longer sees it): the event there is another one, and the
    subscriber says so rather than skip the new history up to it."""
    from shared.app.subscribe import AccessRefused

    await open_tickets(platform, ["east", "east"])
    position = tmp_path / "position"
    options = {"region": "east", "types": [], "from_beginning": True, "position_file": position}
    async with serve_app(create_app(platform)) as url:
        assert len(await collect(url, max_events=4, **options)) == 4
        more = await open_tickets(platform, ["east"], start=5)  # 5-6: the same history
        assert [e["stream_id"] for e in await collect(url, max_events=2, **options)] == more * 2
        # Another history at the position kept: its event there is not the one passed on.
        number, kept, stream = position.read_text().split()
        position.write_text(f"{number} {'0' * len(kept)} {stream}\n")
        with pytest.raises(AccessRefused, match="holds another event at position 6"):
            await collect(url, max_events=1, **options)
        position.write_text(f"{number} {'0' * len(kept)}\n")  # kept before the stream was
        with pytest.raises(AccessRefused, match="holds another event at position 6"):
            await collect(url, max_events=1, **options)
        position.write_text(f"{number} {'0' * len(kept)} {stream}\n")
        # Another filter is another stream: its events are not this one's (no check).
        rare = {**options, "types": ["TicketDiagnosed"]}
        await open_tickets(platform, ["east"], start=9)
        assert [e["event_type"] for e in await collect(url, max_events=1, **rare)] == [
            "TicketDiagnosed"
        ]
        # A position file of an older release (no hash) resumes as before.
        position.write_text(f"{number}\n")
        assert len(await collect(url, max_events=2, **options)) == 2


async def test_subscriber_cli_prints_json_lines_and_resumes(platform: Platform, tmp_path) -> None:
    await open_tickets(platform, ["east", "west", "east"])
    position_file = tmp_path / "pos"

    async def run_cli(url: str, count: int) -> list[dict]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.app.cli",
            "subscribe",
            "--url",
            url,
            "--region",
            "east",
            "--from-beginning",
            "--position-file",
            str(position_file),
            "--max-events",
            str(count),
            "--token",
            token_for("regional_center", region="east"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        return [json.loads(line) for line in out.decode().splitlines()]

    async with serve_app(create_app(platform)) as url:
        first = await run_cli(url, 3)
        second = await run_cli(url, 1)
    assert [e["position"] for e in first + second] == sorted(
        {e["position"] for e in first + second}
    )
    assert len(first + second) == 4 and {e["region"] for e in first + second} == {"east"}
    assert position_file.read_text().split()[:2] == [
        str(second[-1]["position"]),
        second[-1]["hash"],
    ]


async def test_the_subscriber_stops_on_what_retrying_cannot_fix(
    platform: Platform, tmp_path
) -> None:
    """A filter the service refuses (422), a URL that is not one, a position file that holds
    no position: the subscriber says so and stops, where it used to retry forever."""
    import pytest

    from shared.app.subscribe import AccessRefused

    base = {"region": None, "from_beginning": True, "position_file": None, "max_events": 1}
    async with serve_app(create_app(platform)) as url:
        with pytest.raises(AccessRefused, match="422 .*unknown event types"):
            await collect(url, **{**base, "types": ["NoSuchEvent"]})
        garbage = tmp_path / "position"
        garbage.write_text("xyz\n")
        with pytest.raises(AccessRefused, match="does not hold a position"):
            await collect(url, **{**base, "types": [], "position_file": garbage})
    with pytest.raises(AccessRefused, match="not a service URL"):
        await collect("notaurl", **{**base, "types": []})


async def stream_to_its_end(url: str, headers: dict[str, str], query: str = "") -> list[str]:
    """The lines of a stream the server ends (within 20 s)."""
    lines: list[str] = []

    async def read_all() -> None:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"{url}/streams/events{query}", headers=headers) as answer,
        ):
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                lines.append(line)

    await asyncio.wait_for(read_all(), 20)
    return lines


async def test_the_stream_ends_when_its_token_expires(platform: Platform, monkeypatch) -> None:
    """A request with the token would be refused from then on: so is the open stream."""
    monkeypatch.setattr(platform.settings.auth, "leeway_seconds", 0)
    token = token_for("auditor", ttl_seconds=2)
    async with serve_app(create_app(platform)) as url:
        lines = await stream_to_its_end(url, {"Authorization": f"Bearer {token}"})
        async with httpx.AsyncClient() as client:
            again = await client.get(
                f"{url}/streams/events", headers={"Authorization": f"Bearer {token}"}
            )
    assert "event: expired" in lines
    assert again.status_code == 401


async def test_a_database_outage_ends_the_stream_saying_so(platform: Platform, monkeypatch) -> None:
    """Past the first bytes a 503 cannot be sent: the stream ends with an event, after the
    events read before (an unhandled error in the log, and a cut chunk, before)."""
    import shared.http.streams as streams
    from shared.eventstore.db import DatabaseUnavailable

    await open_tickets(platform, ["east"])
    read_after = streams.read_after
    calls = 0

    async def away_after_the_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls > 1:
            raise DatabaseUnavailable("the database is unavailable: restarting")
        return await read_after(*args, **kwargs)

    monkeypatch.setattr(streams, "read_after", away_after_the_first)
    async with serve_app(create_app(platform)) as url:
        lines = await stream_to_its_end(url, {**AUDITOR, "Last-Event-ID": "0"})
    ids = [n for n, line in enumerate(lines) if line.startswith("id: ")]
    assert ids and lines.index("event: unavailable") > ids[-1]


async def test_a_damaged_row_ends_the_stream_saying_where(platform: Platform) -> None:
    """The answer has started: the stream ends with an event naming the position, after
    the events before it (no dropped connection, no traceback)."""
    from sqlalchemy import update

    from shared.eventstore.tables import events

    await open_tickets(platform, ["east", "east"])
    garbage = update(events).where(events.c.position == 3).values(payload="not json")
    await platform.db.write(lambda c: c.execute(garbage))
    async with serve_app(create_app(platform)) as url:
        lines = await stream_to_its_end(url, {**AUDITOR, "Last-Event-ID": "0"})
        # An EventSource polyfill resends the last id in the query on reconnecting.
        again = await stream_to_its_end(url, AUDITOR, "?lastEventId=1")
    assert [line for line in lines if line.startswith("id: ")] == ["id: 1", "id: 2"]
    assert [line for line in again if line.startswith("id: ")] == ["id: 2"]
    assert "event: ledger-damaged" in lines
    data = next(
        line for line in lines[lines.index("event: ledger-damaged") :] if line.startswith("data: ")
    )
    assert json.loads(data[len("data: ") :])["position"] == 3


async def test_the_kafka_subscriber_stops_after_max_events_and_resumes_there(broker) -> None:  # type: ignore[no-untyped-def]
    """It printed every message of a batch whatever --max-events said, and committed them;
    a group without offsets starts at the beginning, --from-beginning rereads."""
    from aiokafka import AIOKafkaProducer

    from shared.app.subscribe import subscribe_kafka
    from shared.eventstore.kafka import ensure_topics

    topic = "maxev.tickets"
    await ensure_topics(broker.bootstrap_servers, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for n in range(5):
            body = json.dumps({"n": n}).encode()
            await producer.send_and_wait(topic, body, key=b"t", headers=[("region", b"east")])
    finally:
        await producer.stop()

    async def take(count: int, group: str = "maxev-center", again: bool = False) -> list[int]:
        out: list[dict] = []
        await subscribe_kafka(
            broker.bootstrap_servers,
            [topic],
            group_id=group,
            region=None,
            types=[],
            from_beginning=again,
            emit=out.append,
            max_events=count,
        )
        return [e["n"] for e in out]

    # A group with no committed offsets (new, or its broker lost them) starts at the
    # beginning: "latest" skipped what a broker that lost its log republished.
    assert await asyncio.wait_for(take(2), 30) == [0, 1]
    assert await asyncio.wait_for(take(3), 30) == [2, 3, 4]
    # --from-beginning reads past the committed offsets again.
    assert await asyncio.wait_for(take(1, again=True), 30) == [0]
    assert await asyncio.wait_for(take(2, group="other-center"), 30) == [0, 1]


async def test_a_kafka_subscriber_running_through_a_broker_that_lost_its_log_misses_nothing(  # type: ignore[no-untyped-def]
    broker,
) -> None:
    """The broker comes back empty, its topic with more partitions, and the relay
    republishes the history: the running subscriber follows the new log and its new
    partitions, from their beginning where it has no offset — nothing skipped (what it
    had may come again: at least once)."""
    from aiokafka import AIOKafkaProducer

    from shared.app.subscribe import subscribe_kafka
    from shared.eventstore.kafka import ensure_topics

    topic = "lost.tickets"
    got: list[dict] = []

    async def publish(*numbers: int, partitions: int = 1) -> None:
        await ensure_topics(broker.bootstrap_servers, [topic], partitions=partitions)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            for n in numbers:
                body = json.dumps({"n": n}).encode()
                await producer.send_and_wait(topic, body, partition=n % partitions)
        finally:
            await producer.stop()

    arrived = asyncio.Event()

    def emit(event: dict) -> None:
        got.append(event)
        arrived.set()

    async def until(*numbers: int) -> None:
        while not {e["n"] for e in got} >= set(numbers):
            arrived.clear()
            await arrived.wait()

    await publish(0)
    following = asyncio.create_task(
        subscribe_kafka(
            broker.bootstrap_servers, [topic], group_id="lost-center", region=None, types=[],
            from_beginning=False, emit=emit,
        )
    )  # fmt: skip
    try:
        await asyncio.wait_for(until(0), 30)
        broker.restart_empty()
        await publish(0, 1, 2, partitions=3)
        await asyncio.wait_for(until(0, 1, 2), 90)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await following


async def test_a_regions_kafka_subscriber_gets_the_events_of_every_region(broker) -> None:  # type: ignore[no-untyped-def]
    """Its region's, and the ones of no region every center gets (checkpoints, erasures,
    legal holds): a center on Kafka must learn of an erasure too."""
    from aiokafka import AIOKafkaProducer

    from shared.app.subscribe import subscribe_kafka
    from shared.eventstore.kafka import ensure_topics

    topic = "regions.mixed"
    await ensure_topics(broker.bootstrap_servers, [topic], partitions=1)
    sent = [("east", "ticket"), ("west", "ticket"), ("", "customer"), ("", "ledger")]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for n, (region, stream_type) in enumerate(sent):
            headers = [("stream_type", stream_type.encode())]
            headers += [("region", region.encode())] if region else []
            body = json.dumps({"n": n}).encode()
            await producer.send_and_wait(topic, body, key=b"k", headers=headers)
    finally:
        await producer.stop()
    out: list[dict] = []
    await asyncio.wait_for(
        subscribe_kafka(
            broker.bootstrap_servers, [topic], group_id="east-center", region="east", types=[],
            from_beginning=True, emit=out.append, max_events=3,
        ),
        30,
    )  # fmt: skip
    assert [e["n"] for e in out] == [0, 2, 3]


def test_a_position_file_asks_for_the_http_stream(monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """With a broker configured the subscriber chose Kafka and ignored --position-file (a
    second run printed everything again): the file now chooses HTTP, and Kafka refuses it."""
    from shared.app.cli import main as cli_main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    argv = ["subscribe", "--source", "kafka", "--position-file", str(tmp_path / "east.pos")]
    assert cli_main(argv) == 2
    assert "--position-file is for the HTTP stream" in capsys.readouterr().err


def test_a_position_file_that_cannot_be_kept_or_no_events_asked_refuse_at_start(  # type: ignore[no-untyped-def]
    monkeypatch, tmp_path, capsys
) -> None:
    """Refused before connecting (port 9 would be retried), not after the first event."""
    from shared.app.cli import main as cli_main

    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    url = ["--url", "http://127.0.0.1:9"]
    for where in (tmp_path / "no" / "such" / "dir.pos", tmp_path):
        assert cli_main(["subscribe", *url, "--position-file", str(where)]) == 2
        assert "the position cannot be kept there" in capsys.readouterr().err
    for count in ("0", "-1", "x"):
        with pytest.raises(SystemExit) as refused:
            cli_main(["subscribe", *url, "--max-events", count])
        assert refused.value.code == 2
        assert "--max-events" in capsys.readouterr().err


def test_differently_filtered_kafka_subscribers_do_not_share_a_group(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two subscribers in one group split its partitions: a center's checkpoint keeper
    (--types LedgerCheckpointed) beside its full copy got half of each."""
    from shared.app.cli import subscriber_group
    from shared.app.config import Settings

    settings = Settings()
    full = subscriber_group(settings, "east", [])
    kept = subscriber_group(settings, "east", ["LedgerCheckpointed"])
    assert full.endswith(".subscriber.east") and kept == f"{full}.LedgerCheckpointed"
    assert subscriber_group(settings, None, ["B", "A", "B"]).endswith(".subscriber.all.A+B")

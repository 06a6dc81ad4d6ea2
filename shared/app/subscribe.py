"""A regional center's subscriber: follow events, print them as JSON lines, resume.

Over HTTP (SSE) the position is the last global position seen, saved to a file after
each event, so a restarted subscriber continues with no gap and no duplicate. Over Kafka
the consumer group's committed offsets are the position; where the group has none (a new
group, or a broker that lost its log and its offsets with it) it starts at the beginning:
at least once, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.eventstore.tables import EVERY_REGIONS_STREAMS
from shared.kernel.text import escape_line_separators


def json_line(envelope: dict[str, Any]) -> str:
    """The subscriber's output line for one event: JSON with no raw line separator in it
    (U+2028, U+2029 and U+0085 escaped), so consumers that split lines the Unicode way
    still read one event per line."""
    return escape_line_separators(json.dumps(envelope, ensure_ascii=False, sort_keys=True))


class AccessRefused(Exception):
    """A refusal retrying cannot help (401, 403, 404, a 422 naming a bad filter), or a URL
    that is not one."""


@dataclass(frozen=True)
class Position:
    """Where a subscriber stands: the last event it passed on, and that event's hash —
    what tells this ledger's event at that position from another history's (one restored
    from an older backup that has since grown past it)."""

    position: int
    hash: str | None = None  # (a file written before it was kept: none)
    # The stream it was passed on in (region and types): checked only in the same one.
    stream: str | None = None

    def checked_in(self, stream: str) -> bool:
        """Whether resuming ``stream`` checks its hash (a file kept before the stream was
        recorded: taken for this one)."""
        return bool(self.hash and self.position) and self.stream in (None, stream)


def load_position(path: Path | None) -> Position | None:
    if path is None:
        return None
    folder = path.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)) or path.is_dir():
        # Found out at start, not after the first event (whose position it could not keep).
        raise AccessRefused(
            f"{path}: the position cannot be kept there (a writable directory's file)"
        )
    if not path.exists():
        return None
    number, hash_, stream = [*path.read_text().split(maxsplit=2), "", "", ""][:3]
    if number and not (number.isascii() and number.isdigit()):
        # Starting over from "now" would silently skip what happened since.
        raise AccessRefused(f"{path} does not hold a position (a ledger position number)")
    return Position(int(number), hash_ or None, stream.strip() or None) if number else None


def stream_of(region: str | None, types: list[str]) -> str:
    """The stream a subscriber follows, as its position file names it."""
    return f"{region or '*'}|{','.join(sorted(types)) or '*'}"


def _refusal(response: httpx.Response) -> str:
    detail = ""
    with contextlib.suppress(ValueError, AttributeError):
        detail = str(response.json().get("detail") or "")
    where = f"{response.status_code} from {response.request.url}"
    return f"{where}: {detail}" if detail else where


def save_position(path: Path | None, position: Position) -> None:
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    said = [
        str(position.position),
        *([position.hash, position.stream or ""] if position.hash else []),
    ]
    tmp.write_text(" ".join(said).rstrip() + "\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written position


def _another_history(held: Position, found: int) -> str:
    said = "another event" if found == held.position else f"no event of this stream (next: {found})"
    return (
        f"the ledger holds {said} at position {held.position}, where this subscriber passed "
        "one on: its history is not the one followed (restored from an older backup, or "
        "another deployment's). Remove the position file to follow this ledger (with "
        "--from-beginning: from its start)"
    )


# How long a stop waits for an event's line to be printed (its reader may have stalled).
PRINT_GRACE_SECONDS = 2.0


class Stops:
    """Ctrl-C and SIGTERM while following: between events, at once; while an event is
    passed on (printed, then its position saved), once it is — stopped between the two,
    the next run would print it twice — unless its printing stays blocked (a reader that
    stalled) for ``PRINT_GRACE_SECONDS``: then at once, the line not passed on."""

    def __init__(self) -> None:
        self.passing = False
        self.caught: int | None = None
        self.before: dict[int, Any] = {}

    def on_stop(self, signum: int, frame: Any) -> None:
        if not self.passing:
            self._stop(signum, frame)
            return  # (an ignored signal)
        if self.caught is None:
            self.caught = signum
            signal.setitimer(signal.ITIMER_REAL, PRINT_GRACE_SECONDS)

    def on_alarm(self, _signum: int, frame: Any) -> None:
        if self.passing and self.caught is not None:
            caught, self.caught = self.caught, None
            self._stop(caught, frame)

    def _stop(self, signum: int, frame: Any) -> None:
        previous = self.before.get(signum)
        if callable(previous):
            previous(signum, frame)  # SIGTERM's raises (the CLI's Terminated)
        if previous != signal.SIG_IGN:
            raise KeyboardInterrupt  # (asyncio's Ctrl-C handler only cancels, later)

    @contextlib.contextmanager
    def passing_one(self) -> Iterator[None]:
        self.passing = True
        try:
            yield
        finally:
            self.passing = False
            if self.caught is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                caught, self.caught = self.caught, None
                self._stop(caught, None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stops]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # (signals reach the main thread only)
            return
        handlers = {
            signal.SIGINT: self.on_stop,
            signal.SIGTERM: self.on_stop,
            signal.SIGALRM: self.on_alarm,
        }
        self.before = {s: signal.signal(s, h) for s, h in handlers.items()}
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for s, handler in self.before.items():
                signal.signal(s, handler)


async def sse_events(
    client: httpx.AsyncClient, url: str, params: dict[str, Any], last_id: int | None
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """One connection's events as (position, envelope)."""
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    async with client.stream("GET", url, params=params, headers=headers, timeout=None) as response:
        if response.is_error:
            await response.aread()  # the problem's detail, for the message
            response.raise_for_status()
        event_id: str | None = None
        data: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if event_id is not None and data:
                    yield int(event_id), json.loads("\n".join(data))
                event_id, data = None, []
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


async def _wait_to_retry(exc: Exception, base_url: str, backoff: float) -> float:
    """After a failure retrying can mend: say so, wait, and the next wait; one it cannot
    (a 4xx but 408 and 429, a URL that is none) is ``AccessRefused``."""
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if 400 <= code < 500 and code not in (408, 429):
            raise AccessRefused(_refusal(exc.response)) from None
        said = _refusal(exc.response)
    elif isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        raise AccessRefused(f"{base_url}: not a service URL ({exc})") from None
    else:
        said = f"cannot reach {base_url} ({exc!r})"
    print(f"subscribe: {said}; retrying in {backoff:g} s", file=sys.stderr)
    return await _waited(backoff)


async def _waited(backoff: float) -> float:
    """Waits ``backoff``; the next wait (doubled, up to 10 s)."""
    await asyncio.sleep(backoff)
    return min(backoff * 2, 10.0)


async def subscribe_http(
    base_url: str,
    *,
    region: str | None,
    types: list[str],
    from_beginning: bool,
    position_file: Path | None,
    emit: Callable[[dict[str, Any]], None],
    max_events: int | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """Follow the SSE stream, reconnecting after errors; returns the events emitted."""
    held = load_position(position_file)
    if held is None and from_beginning:
        held = Position(0)
    params: dict[str, Any] = {}
    if region:
        params["region"] = region
    if types:
        params["types"] = ",".join(types)
    emitted = 0
    backoff = 0.5
    stream = stream_of(region, types)
    async with httpx.AsyncClient(headers=headers) as client:
        with Stops().installed() as stops:
            while max_events is None or emitted < max_events:
                # Resumed from a hash kept: from the event before, to see that one again first.
                check = held if held is not None and held.checked_in(stream) else None
                after = None if held is None else held.position - (check is not None)
                try:
                    async for pos, envelope in sse_events(
                        client, f"{base_url.rstrip('/')}/streams/events", params, after
                    ):
                        if check is not None:
                            if (pos, envelope.get("hash")) != (check.position, check.hash):
                                raise AccessRefused(_another_history(check, pos))
                            check = None
                            continue  # passed on already
                        with stops.passing_one():
                            emit(envelope)
                            held = Position(pos, envelope.get("hash"), stream)
                            save_position(position_file, held)
                        emitted += 1
                        backoff = 0.5
                        if max_events is not None and emitted >= max_events:
                            return emitted
                    # The server ended the stream (stopping, a database gone): its `retry`.
                    backoff = await _waited(backoff)
                except (httpx.HTTPStatusError, httpx.TransportError, httpx.InvalidURL) as exc:
                    backoff = await _wait_to_retry(exc, base_url, backoff)
    return emitted


def _wanted(headers: list[tuple[str, bytes]] | None, region: str | None, types: list[str]) -> bool:
    """Whether a message passes the filters, by its headers alone (no decoding)."""
    head = {k: v.decode() for k, v in (headers or [])}
    # Signed ledger checkpoints and the customers' erasures and legal holds belong to no
    # region: every center gets them (the topic's ACL says who reads `.customers`: its
    # events are whole, unlike a region's SSE stream).
    regional = head.get("stream_type") not in EVERY_REGIONS_STREAMS
    if region and regional and head.get("region") != region:
        return False
    return not types or head.get("event_type") in types


def _rewinding(consumer: Any) -> Any:
    """A rebalance listener that reads each partition from its beginning the first time it
    is assigned (a later rebalance must not read it all again)."""
    from aiokafka import ConsumerRebalanceListener

    rewound: set[Any] = set()

    class FromTheBeginning(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            fresh = [p for p in assigned if p not in rewound]
            if fresh:
                rewound.update(fresh)
                await consumer.seek_to_beginning(*fresh)

    return FromTheBeginning()


async def subscribe_kafka(
    bootstrap_servers: str,
    topics: list[str],
    *,
    group_id: str,
    region: str | None,
    types: list[str],
    from_beginning: bool,
    emit: Callable[[dict[str, Any]], None],
    max_events: int | None = None,
) -> int:
    """Kafka consumer group; the region header lets the filter skip decoding. A partition
    with no committed offset is read from its beginning ("latest" would skip what a
    broker that lost the group's offsets republished: silently, for good);
    ``from_beginning`` reads every partition from its beginning, committed or not."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Partitions a topic gains (recreated with another count) join within a minute.
        metadata_max_age_ms=60_000,
    )
    if from_beginning:
        consumer.subscribe(topics, listener=_rewinding(consumer))
    else:
        consumer.subscribe(topics)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # (a broker away: closed, not left for the collector)
        raise
    emitted = 0
    try:
        while max_events is None or emitted < max_events:
            batch = await consumer.getmany(timeout_ms=1000)
            # Offsets committed are those of the messages handled: stopping at
            # ``max_events`` inside a batch leaves the rest for the next run.
            handled: dict[Any, OffsetAndMetadata] = {}
            for partition, messages in batch.items():
                for m in messages:
                    if max_events is not None and emitted >= max_events:
                        break
                    handled[partition] = OffsetAndMetadata(m.offset + 1, "")
                    if _wanted(m.headers, region, types):
                        emit(json.loads(m.value))
                        emitted += 1
            if handled:
                await consumer.commit(handled)
    finally:
        await consumer.stop()
    return emitted

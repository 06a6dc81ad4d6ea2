"""Audit exports: a ticket's or a period's events as JSON lines or CSV, with their hashes,
and a signed summary (SHA-256 of the export, HMAC-signed) that a later check verifies.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import Connection, Select, func, select

from shared.app.config import Settings
from shared.app.files import key_file
from shared.eventstore.driver import rows_tolerating_damage
from shared.eventstore.ledger import EVENT_COLUMNS, EventStore, checked_row, row_to_envelope
from shared.eventstore.tables import events
from shared.kernel.events.envelope import Actor, EventEnvelope, canonical_json, format_timestamp
from shared.kernel.text import escape_line_separators, unique_keys

ExportFormat = Literal["jsonl", "csv"]
CSV_COLUMNS = list(EVENT_COLUMNS)


def signing_key(settings: Settings) -> bytes:
    """The configured key, or (embedded default) one generated once into the data dir."""
    if settings.audit_signing_key:
        return settings.audit_signing_key.get_secret_value().encode()
    path = Path(settings.data_dir) / "audit-signing.key"
    return key_file(path, lambda: secrets.token_hex(32).encode()).strip()


def existing_signing_key(settings: Settings) -> bytes | None:
    """The key exports were signed with, never a new one: checking with a key generated
    for the occasion would fail every summary, saying nothing true."""
    configured = settings.audit_signing_key is not None
    path = Path(settings.data_dir) / "audit-signing.key"
    return signing_key(settings) if configured or path.is_file() else None


NO_SIGNING_KEY = (
    "the summary's signature cannot be checked here: no audit signing key "
    "(TICKETLINE_AUDIT_SIGNING_KEY, or audit-signing.key in the data directory); "
    "verify-export runs where the platform's key and database are"
)


def _in_utc(at: datetime | None) -> str | None:
    """As the API writes times (the CLI and the endpoint sign one spelling)."""
    return None if at is None else at.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class ExportScope:
    """Which events an export holds (all of them by default)."""

    ticket_id: str | None = None
    region: str | None = None
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None

    def as_summary(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "region": self.region,
            "recorded_from": _in_utc(self.recorded_from),
            "recorded_to": _in_utc(self.recorded_to),
        }

    def where(self, query: Select[Any]) -> Select[Any]:
        if self.ticket_id:
            query = query.where(events.c.stream_id == self.ticket_id)
        if self.region:
            query = query.where(events.c.region == self.region)
        if self.recorded_from:
            query = query.where(events.c.recorded_at >= self.recorded_from)
        if self.recorded_to:
            query = query.where(events.c.recorded_at < self.recorded_to)
        return query


# Events read, written or checked at a time: memory stays flat whatever the ledger's size
# (and 5,000 positions is within every driver's parameter limit).
CHUNK = 5_000


def ticket_region(conn: Connection, ticket_id: str) -> str | None:
    """The region the ticket belongs to now: its newest event's (None: no such ticket)."""
    query = (
        select(events.c.region)
        .where(events.c.stream_id == ticket_id, events.c.region.is_not(None))
        .order_by(events.c.position.desc())
        .limit(1)
    )
    return conn.execute(query).scalar()


def select_events(conn: Connection, scope: ExportScope | None = None) -> list[EventEnvelope]:
    """The scope's events in position order, all in memory (a ticket's, a test's)."""
    query = (scope or ExportScope()).where(select(events).order_by(events.c.position))
    return [row_to_envelope(r) for r in rows_tolerating_damage(conn, query)]


def _csv_row(e: EventEnvelope) -> list[Any]:
    return [
        e.position,
        str(e.event_id),
        e.stream_type,
        e.stream_id,
        e.stream_version,
        e.event_type,
        e.schema_version,
        format_timestamp(e.occurred_at),
        format_timestamp(e.recorded_at),
        e.actor.subject,
        e.actor.role,
        e.service,
        str(e.correlation_id),
        str(e.causation_id) if e.causation_id else "",
        e.region or "",
        escape_line_separators(canonical_json(e.payload)),
        e.prev_hash,
        e.hash,
    ]


def _header(fmt: ExportFormat) -> bytes:
    if fmt == "jsonl":
        return b""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(CSV_COLUMNS)
    return buffer.getvalue().encode()


def _lines(envelopes: Iterable[EventEnvelope], fmt: ExportFormat) -> bytes:
    if fmt == "jsonl":
        # One event per line for every reader: line separators inside JSON strings are
        # escaped (the same value; the summary's SHA-256 covers these bytes).
        return "".join(escape_line_separators(e.to_json_text()) + "\n" for e in envelopes).encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for e in envelopes:
        writer.writerow(_csv_row(e))
    return buffer.getvalue().encode()


def render(envelopes: list[EventEnvelope], fmt: ExportFormat) -> bytes:
    return _header(fmt) + _lines(envelopes, fmt)


@dataclass
class ExportTally:
    """What an export's summary says of its file, counted as it is written."""

    events: int = 0
    first_position: int | None = None
    last_position: int | None = None
    sha256: Any = field(default_factory=hashlib.sha256)
    # Rows that no longer match their hash, exported as stored (it is evidence) and said.
    not_matching: int = 0
    not_matching_shown: list[int] = field(default_factory=list)

    def add(self, data: bytes, envelopes: Sequence[EventEnvelope] = ()) -> None:
        self.sha256.update(data)
        if envelopes:
            self.events += len(envelopes)
            if self.first_position is None:
                self.first_position = envelopes[0].position
            self.last_position = envelopes[-1].position

    def add_not_matching(self, positions: Sequence[int]) -> None:
        self.not_matching += len(positions)
        self.not_matching_shown += positions[: 10 - len(self.not_matching_shown)]


def write_export(
    conn: Connection, out: BinaryIO, fmt: ExportFormat, scope: ExportScope
) -> ExportTally:
    """The scope's events up to the ledger's head now, written to ``out`` as they are read,
    a chunk at a time (flat memory, whatever the ledger's size)."""
    head = conn.execute(select(func.coalesce(func.max(events.c.position), 0))).scalar_one()
    query = scope.where(select(events).where(events.c.position <= head))
    tally = ExportTally()
    header = _header(fmt)
    out.write(header)
    tally.add(header)
    after = 0
    while True:
        chunk = query.where(events.c.position > after).order_by(events.c.position).limit(CHUNK)
        read = [_read_checked(r) for r in rows_tolerating_damage(conn, chunk)]
        if not read:
            return tally
        envelopes = [e for e, _ in read]
        data = _lines(envelopes, fmt)
        out.write(data)
        tally.add(data, envelopes)
        tally.add_not_matching([e.position for e, intact in read if not intact])
        after = envelopes[-1].position


def parse(data: bytes, fmt: ExportFormat) -> list[EventEnvelope]:
    return [e for chunk in _read_chunks(io.BytesIO(data), fmt) for e in chunk]


@contextlib.contextmanager
def _naming_line(number: int) -> Iterator[None]:
    """A line that is no event is named by its line in the file (the JSON parser's own
    "line 1" is the line within the record)."""
    try:
        yield
    except ValueError as exc:  # JSON, UTF-8 and validation errors alike
        raise ValueError(f"line {number}: {exc}") from exc


def _read_chunks(source: BinaryIO, fmt: ExportFormat) -> Iterator[list[EventEnvelope]]:
    """The file's events, a chunk at a time (lines end with "\n" only: older exports may
    hold raw U+2028 inside a line). Keys given twice are refused: the file must hold one
    reading of each event."""
    chunk: list[EventEnvelope] = []
    if fmt == "jsonl":
        for number, line in enumerate(source, 1):
            if line.strip(b"\n"):
                with _naming_line(number):
                    raw = json.loads(line.decode(), object_pairs_hook=unique_keys)
                    chunk.append(EventEnvelope.model_validate(raw))
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    else:
        text = io.TextIOWrapper(source, encoding="utf-8", newline="")
        try:
            rows = csv.DictReader(text)
            for row in rows:
                with _naming_line(rows.line_num):
                    chunk.append(_csv_envelope(row))
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
        finally:
            text.detach()  # the caller's file stays open (even when a row fails)
    if chunk:
        yield chunk


def _csv_envelope(row: dict[str, str]) -> EventEnvelope:
    return EventEnvelope.model_validate(
        dict(
            event_id=row["event_id"],
            position=int(row["position"]),
            stream_type=row["stream_type"],
            stream_id=row["stream_id"],
            stream_version=int(row["stream_version"]),
            event_type=row["event_type"],
            schema_version=int(row["schema_version"]),
            occurred_at=row["occurred_at"],
            recorded_at=row["recorded_at"],
            actor=Actor(subject=row["actor_subject"], role=row["actor_role"]),
            service=row["service"],
            correlation_id=row["correlation_id"],
            causation_id=row["causation_id"] or None,
            region=row["region"] or None,
            payload=json.loads(row["payload"], object_pairs_hook=unique_keys),
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )
    )


def _sign(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, canonical_json(content).encode(), hashlib.sha256).hexdigest()


def export_summary(
    tally: ExportTally, fmt: ExportFormat, scope: dict[str, Any], key: bytes
) -> dict[str, Any]:
    content = {
        "format": fmt,
        "scope": scope,
        "events": tally.events,
        "first_position": tally.first_position,
        "last_position": tally.last_position,
        "sha256": tally.sha256.hexdigest(),
    }
    if tally.not_matching:  # signed with the rest: the platform said so when it exported
        content["not_matching_hash"] = {
            "events": tally.not_matching,
            "positions": tally.not_matching_shown,
        }
    return {**content, "signature": _sign(key, content)}


def export_warning(summary: dict[str, Any]) -> str | None:
    """What an export's summary says of rows that no longer match their hash, in words."""
    said = summary.get("not_matching_hash")
    if not said:
        return None
    shown = ", ".join(map(str, said["positions"]))
    more = ", …" if said["events"] > len(said["positions"]) else ""
    return (
        f"{said['events']} exported event(s) do not match their hash in the ledger (position "
        f"{shown}{more}): exported as stored; `ticketline verify` says more"
    )


def summarise(
    data: bytes,
    envelopes: list[EventEnvelope],
    fmt: ExportFormat,
    scope: dict[str, Any],
    key: bytes,
) -> dict[str, Any]:
    """The summary of an export held in memory."""
    tally = ExportTally()
    tally.add(data, envelopes)
    return export_summary(tally, fmt, scope, key)


@dataclass
class ExportCheck:
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# What every export's summary holds (``summarise``), whatever else it says.
SUMMARY_FIELDS = ("format", "events", "sha256", "signature")


class _Digesting(io.RawIOBase):
    """A file read through, its SHA-256 taken on the way."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.sha256.update(data)
        return len(data)


def verify_export(
    source: BinaryIO | bytes,
    summary: dict[str, Any],
    key: bytes | None,
    conn: Connection | None = None,
    store: EventStore | None = None,
) -> ExportCheck:
    """The summary is authentic, the file is the one it describes, every event's hash
    matches its content, and (given the ledger) every event is in the ledger unchanged and
    none of its scope is missing. Read once, a chunk at a time (flat memory)."""
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing or summary.get("format") not in ("jsonl", "csv"):
        what = f"lacks {', '.join(missing)}" if missing else "names no format (jsonl, csv)"
        return ExportCheck([f"the summary is not an export's summary: it {what}"])
    problems: list[str] = []
    content = {k: v for k, v in summary.items() if k != "signature"}
    if key is None:
        problems.append(NO_SIGNING_KEY)
    elif not hmac.compare_digest(_sign(key, content), str(summary.get("signature", ""))):
        problems.append(
            "summary signature does not match: the summary was altered or signed with another key"
        )
    fmt = summary["format"]
    digesting = _Digesting(io.BytesIO(source) if isinstance(source, bytes) else source)
    reader = io.BufferedReader(digesting, 1 << 16)
    found: list[str] = []
    gaps = _Gaps(conn, summary) if conn is not None and store is not None else None
    if gaps is not None and summary.get("events") and _ledger_is_empty(gaps.conn):
        gaps = None  # one finding, not one per event
        problems.append(
            "the ledger here holds no events: verify-export checks an export against the "
            "database it was taken from"
        )
    count, unreadable = 0, None
    try:
        for chunk in _read_chunks(reader, fmt):
            count += len(chunk)
            found += [
                f"event {e.event_id} (position {e.position}): content does not match its hash"
                for e in chunk
                if e.computed_hash() != e.hash
            ]
            if gaps is not None:
                found += _against_ledger(gaps.conn, chunk)
                gaps.check(chunk)
    except Exception as exc:  # any parse failure is a finding, not a crash
        reason = f"it has no {exc} column" if isinstance(exc, KeyError) else str(exc)
        unreadable = f"export cannot be read as {fmt}, the format its summary names: {reason}"
    while reader.read(1 << 16):  # the rest, for the digest
        pass
    if digesting.sha256.hexdigest() != summary.get("sha256"):
        problems.append("export file does not match the summary's sha256")
    if unreadable is not None:
        return ExportCheck([*problems, unreadable])
    if count != summary.get("events"):
        problems.append(f"{count} events in the file, {summary.get('events')!r} in the summary")
    problems += found
    if gaps is not None:
        problems += gaps.finish()
    return ExportCheck(problems)


def _ledger_is_empty(conn: Connection) -> bool:
    return conn.execute(select(events.c.position).limit(1)).first() is None


class _Gaps:
    """The ledger's events of the export's scope up to its last position that the file
    lacks (an event cut out, and the summary signed again by someone holding the key):
    the file's positions (ascending, as written) beside the ledger's, a chunk at a time."""

    def __init__(self, conn: Connection, summary: dict[str, Any]) -> None:
        self.conn = conn
        self.query: Select[Any] | None = None
        self.problem: str | None = None
        self.missing: list[int] = []
        self.count = 0
        self.after = 0
        scope, self.last = summary.get("scope"), summary.get("last_position")
        if not isinstance(scope, dict) or not isinstance(self.last, int):
            return
        try:
            bounds = {k: _instant(scope.get(k)) for k in ("recorded_from", "recorded_to")}
        except ValueError:
            self.problem = "the summary's scope is not an export's scope"
            return
        ticket, region = scope.get("ticket_id"), scope.get("region")
        self.query = ExportScope(
            str(ticket) if ticket else None,
            str(region) if region else None,
            bounds["recorded_from"],
            bounds["recorded_to"],
        ).where(select(events.c.position))

    def check(self, chunk: Sequence[EventEnvelope]) -> None:
        if self.query is None:
            return
        held = [e.position for e in chunk]
        if any(b <= a for a, b in zip([self.after, *held], held, strict=False)):
            self.problem = "the file's events are not in position order, as an export writes them"
            self.query = None
            return
        self._ledger_between(self.after, held[-1], set(held))
        self.after = held[-1]

    def _ledger_between(self, after: int, upto: int, held: set[int]) -> None:
        assert self.query is not None
        query = self.query.where(events.c.position > after, events.c.position <= upto)
        for position in self.conn.execute(query).scalars():
            if position not in held:
                self.count += 1
                if len(self.missing) < 10:
                    self.missing.append(position)

    def finish(self) -> list[str]:
        if self.query is not None and isinstance(self.last, int) and self.last > self.after:
            self._ledger_between(self.after, self.last, set())
        if self.problem is not None:
            return [self.problem]
        if not self.count:
            return []
        shown = ", ".join(map(str, self.missing)) + (", …" if self.count > 10 else "")
        return [
            f"the ledger holds {self.count} event(s) of the export's scope, up to its last "
            f"position, that the file lacks (position {shown})"
        ]


def _instant(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _against_ledger(conn: Connection, envelopes: Sequence[EventEnvelope]) -> list[str]:
    """Each exported event is the ledger's row at its position, and that row still matches
    its hash (an edited row keeps the old hash: the export alone would not show it)."""
    positions = [e.position for e in envelopes]
    rows: dict[int, Any] = {}
    for start in range(0, len(positions), CHUNK):
        query = select(events).where(events.c.position.in_(positions[start : start + CHUNK]))
        found = rows_tolerating_damage(conn, query)
        rows.update((row.position, row) for row in found)
    problems = []
    for e in envelopes:
        row = rows.get(e.position)
        if row is None:
            problems.append(f"event {e.event_id} (position {e.position}) is not in the ledger")
            continue
        if row.hash != e.hash:
            problems.append(f"event {e.event_id} (position {e.position}) differs from the ledger")
            continue
        if not _row_intact(row):
            problems.append(
                f"event {e.event_id} (position {e.position}): the ledger's row no longer "
                "matches its hash (edited in the ledger; `ticketline verify` says more)"
            )
    return problems


def _row_intact(row: Any) -> bool:
    """The stored row still matches its hash (an edited row keeps the old one)."""
    try:
        return bool(checked_row(row)[1] == row.hash)
    except Exception:  # whatever a hand-edited row makes the decoding raise
        return False


def _read_checked(row: Any) -> tuple[EventEnvelope, bool]:
    """The row's event, and whether the row still matches its hash: decoded once."""
    try:
        envelope, stored_hash = checked_row(row)
    except Exception:  # a hand-edited row: read as stored (it is evidence), not intact
        return row_to_envelope(row), False
    return envelope, stored_hash == row.hash

"""Audit exports: a ticket's or a period's events as JSON lines or CSV, with their hashes,
and a signed summary (SHA-256 of the export, HMAC-signed) that a later check verifies.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, select

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


def select_events(
    conn: Connection,
    *,
    ticket_id: str | None = None,
    region: str | None = None,
    recorded_from: datetime | None = None,
    recorded_to: datetime | None = None,
) -> list[EventEnvelope]:
    query = select(events).order_by(events.c.position)
    if ticket_id:
        query = query.where(events.c.stream_id == ticket_id)
    if region:
        query = query.where(events.c.region == region)
    if recorded_from:
        query = query.where(events.c.recorded_at >= recorded_from)
    if recorded_to:
        query = query.where(events.c.recorded_at < recorded_to)
    rows = rows_tolerating_damage(conn, query)
    return [row_to_envelope(r) for r in rows]


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


def render(envelopes: list[EventEnvelope], fmt: ExportFormat) -> bytes:
    if fmt == "jsonl":
        # One event per line for every reader: line separators inside JSON strings are
        # escaped (the same value; the summary's SHA-256 covers these bytes).
        return "".join(
            escape_line_separators(canonical_json(e.to_json_dict())) + "\n" for e in envelopes
        ).encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in envelopes:
        writer.writerow(_csv_row(e))
    return buffer.getvalue().encode()


def parse(data: bytes, fmt: ExportFormat) -> list[EventEnvelope]:
    text = data.decode()
    if fmt == "jsonl":
        # Lines end with "\n" only (older exports may hold raw U+2028 inside a line).
        # Keys given twice are refused: the file must hold one reading of each event.
        return [
            EventEnvelope.model_validate(json.loads(line, object_pairs_hook=unique_keys))
            for line in text.split("\n")
            if line
        ]
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        out.append(
            EventEnvelope.model_validate(
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
        )
    return out


def _sign(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, canonical_json(content).encode(), hashlib.sha256).hexdigest()


def summarise(
    data: bytes,
    envelopes: list[EventEnvelope],
    fmt: ExportFormat,
    scope: dict[str, Any],
    key: bytes,
) -> dict[str, Any]:
    content = {
        "format": fmt,
        "scope": scope,
        "events": len(envelopes),
        "first_position": envelopes[0].position if envelopes else None,
        "last_position": envelopes[-1].position if envelopes else None,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return {**content, "signature": _sign(key, content)}


@dataclass
class ExportCheck:
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# What every export's summary holds (``summarise``), whatever else it says.
SUMMARY_FIELDS = ("format", "events", "sha256", "signature")


def verify_export(
    data: bytes,
    summary: dict[str, Any],
    key: bytes,
    conn: Connection | None = None,
    store: EventStore | None = None,
) -> ExportCheck:
    """The summary is authentic, the file is the one it describes, every event's hash
    matches its content, and (given the ledger) every event is in the ledger unchanged."""
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing or summary.get("format") not in ("jsonl", "csv"):
        what = f"lacks {', '.join(missing)}" if missing else "names no format (jsonl, csv)"
        return ExportCheck([f"the summary is not an export's summary: it {what}"])
    problems: list[str] = []
    content = {k: v for k, v in summary.items() if k != "signature"}
    if not hmac.compare_digest(_sign(key, content), str(summary.get("signature", ""))):
        problems.append(
            "summary signature does not match: the summary was altered or signed with another key"
        )
    if hashlib.sha256(data).hexdigest() != summary.get("sha256"):
        problems.append("export file does not match the summary's sha256")
    fmt = summary["format"]
    try:
        envelopes = parse(data, fmt)
    except Exception as exc:  # any parse failure is a finding, not a crash
        reason = f"it has no {exc} column" if isinstance(exc, KeyError) else str(exc)
        return ExportCheck(
            [*problems, f"export cannot be read as {fmt}, the format its summary names: {reason}"]
        )
    if len(envelopes) != summary.get("events"):
        problems.append(
            f"{len(envelopes)} events in the file, {summary.get('events')!r} in the summary"
        )
    for e in envelopes:
        if e.computed_hash() != e.hash:
            problems.append(
                f"event {e.event_id} (position {e.position}): content does not match its hash"
            )
    if conn is not None and store is not None:
        problems += _against_ledger(conn, envelopes)
        problems += _missing_from_file(conn, envelopes, summary)
    return ExportCheck(problems)


def _missing_from_file(
    conn: Connection, envelopes: list[EventEnvelope], summary: dict[str, Any]
) -> list[str]:
    """The ledger's events of the export's scope up to its last position that the file
    lacks (an event cut out, and the summary signed again by someone holding the key)."""
    scope, last = summary.get("scope"), summary.get("last_position")
    if not isinstance(scope, dict) or not isinstance(last, int):
        return []
    try:
        bounds = {k: _instant(scope.get(k)) for k in ("recorded_from", "recorded_to")}
    except ValueError:
        return ["the summary's scope is not an export's scope"]
    query = select(events.c.position).where(events.c.position <= last)
    if scope.get("ticket_id"):
        query = query.where(events.c.stream_id == str(scope["ticket_id"]))
    if scope.get("region"):
        query = query.where(events.c.region == str(scope["region"]))
    if bounds["recorded_from"]:
        query = query.where(events.c.recorded_at >= bounds["recorded_from"])
    if bounds["recorded_to"]:
        query = query.where(events.c.recorded_at < bounds["recorded_to"])
    held = {e.position for e in envelopes}
    missing = [p for p in conn.execute(query).scalars() if p not in held]
    if not missing:
        return []
    shown = ", ".join(str(p) for p in missing[:10]) + (", …" if len(missing) > 10 else "")
    return [
        f"the ledger holds {len(missing)} event(s) of the export's scope, up to its last "
        f"position, that the file lacks (position {shown})"
    ]


def _instant(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _against_ledger(conn: Connection, envelopes: list[EventEnvelope]) -> list[str]:
    """Each exported event is the ledger's row at its position, and that row still matches
    its hash (an edited row keeps the old hash: the export alone would not show it)."""
    positions = [e.position for e in envelopes]
    rows: dict[int, Any] = {}
    for start in range(0, len(positions), 5_000):  # within every driver's parameter limit
        query = select(events).where(events.c.position.in_(positions[start : start + 5_000]))
        found = rows_tolerating_damage(conn, query)
        rows.update((row.position, row) for row in found)
    problems = []
    for e in envelopes:
        row = rows.get(e.position)
        if row is None or row.hash != e.hash:
            problems.append(f"event {e.event_id} (position {e.position}) differs from the ledger")
            continue
        try:
            intact = checked_row(row)[1] == row.hash
        except Exception:  # whatever a hand-edited row makes the decoding raise
            intact = False
        if not intact:
            problems.append(
                f"event {e.event_id} (position {e.position}): the ledger's row no longer "
                "matches its hash (edited after the export; `ticketline verify` says more)"
            )
    return problems

"""Hash-chain and global-sequence verification of the whole ledger."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from shared.eventstore.ledger import EventStore
from shared.eventstore.tables import event_sequence
from shared.kernel.events.envelope import GENESIS_HASH


@dataclass(frozen=True)
class BrokenLink:
    kind: str  # "hash", "chain", "stream_version", "global_sequence", "ledger_tail"
    stream_id: str
    stream_version: int
    event_id: str
    position: int
    detail: str


@dataclass
class VerificationReport:
    events_checked: int = 0
    streams_checked: int = 0
    broken: list[BrokenLink] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


def verify_ledger(
    conn: Connection, store: EventStore, *, batch_size: int = 5000, stop_at_first: bool = True
) -> VerificationReport:
    """Walk every event in global order, checking that positions are contiguous, each
    stream's versions follow one another, each event's prev_hash is its predecessor's
    hash, and each hash matches the event's content; then that the ledger ends where the
    position counter says it does (a deleted newest event leaves the counter ahead)."""
    report = VerificationReport()
    heads: dict[str, tuple[int, str]] = {}
    last_position = 0
    while True:
        batch = store.read_all(conn, after_position=last_position, limit=batch_size)
        if not batch:
            break
        for e in batch:
            report.events_checked += 1
            version, prev = heads.get(e.stream_id, (0, GENESIS_HASH))
            problems: list[tuple[str, str]] = []
            if e.position != last_position + 1:
                problems.append(
                    ("global_sequence", f"position {e.position} follows {last_position}")
                )
            if e.stream_version != version + 1:
                problems.append(("stream_version", f"version {e.stream_version} follows {version}"))
            if e.prev_hash != prev:
                problems.append(("chain", "prev_hash does not match the previous event's hash"))
            if e.computed_hash() != e.hash:
                problems.append(("hash", "content does not match its hash"))
            for kind, detail in problems:
                report.broken.append(
                    BrokenLink(
                        kind, e.stream_id, e.stream_version, str(e.event_id), e.position, detail
                    )
                )
            if problems and stop_at_first:
                report.streams_checked = len(heads)
                return report
            heads[e.stream_id] = (e.stream_version, e.hash)
            last_position = e.position
    report.streams_checked = len(heads)
    counter = conn.execute(select(event_sequence.c.last_position)).scalar() or 0
    if counter != last_position:
        report.broken.append(
            BrokenLink(
                "ledger_tail",
                "",
                0,
                "",
                last_position,
                f"the position counter is at {counter} but the last event is at {last_position}"
                + (" (events at the end were removed)" if counter > last_position else ""),
            )
        )
    return report

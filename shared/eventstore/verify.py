"""Hash-chain and global-sequence verification of the whole ledger, and (given checkpoints
held elsewhere) of its history against them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from shared.eventstore.checkpoints import HeldCheckpoint, LedgerState, StreamHeads
from shared.eventstore.ledger import EventStore, checked_row
from shared.eventstore.personal.sealing import erasures_undone
from shared.eventstore.tables import event_sequence
from shared.kernel.events.customers import customer_stream_id
from shared.kernel.events.envelope import GENESIS_HASH, EventEnvelope
from shared.kernel.events.registry import UnreadableEvent


@dataclass(frozen=True)
class BrokenLink:
    # "hash", "chain", "stream_version", "global_sequence", "ledger_tail", "stream_tail",
    # "checkpoint",
    # "unreadable" (a row that is no event: a payload that is not JSON, a time that is none)
    kind: str
    stream_id: str
    stream_version: int
    event_id: str
    position: int
    detail: str


@dataclass
class VerificationReport:
    events_checked: int = 0
    streams_checked: int = 0
    checkpoints_checked: int = 0
    broken: list[BrokenLink] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


@dataclass(frozen=True)
class StreamChain:
    """One stream's events as read (``read_stream_checked``), checked on their own: each
    event's ``ok`` (its content matches its hash, and it follows the one before: the next
    version, its prev_hash that event's hash), and what is wrong, in words."""

    ok: list[bool]
    problems: list[str]

    @property
    def valid(self) -> bool:
        return not self.problems


def stream_chain(
    checked: Sequence[tuple[EventEnvelope, str]], recorded_version: int
) -> StreamChain:
    """``recorded_version``: the version the stream's state row records (its ETag) — events
    cut from the stream's end leave every remaining link intact, and only that says so."""
    ok: list[bool] = []
    problems: list[str] = []
    previous, version = GENESIS_HASH, 0
    for e, stored_hash in checked:
        follows = e.prev_hash == previous and e.stream_version == version + 1
        ok.append(follows and stored_hash == e.hash)
        if not follows:
            problems.append(
                f"version {e.stream_version} does not follow version {version} (an event "
                "between them was removed, moved or changed)"
            )
        if stored_hash != e.hash:
            problems.append(f"version {e.stream_version}: its content does not match its hash")
        previous, version = e.hash, e.stream_version
    if recorded_version > version:
        problems.append(
            f"the ticket's state records version {recorded_version}, the ledger holds "
            f"versions up to {version}: events at its end were removed"
        )
    return StreamChain(ok, problems)


# A check of where streams end, given each stream's last version and hash as the walk saw
# them (``shared.readmodels.ticket_state.ticket_tail_problems``: a read model's rows say
# what versions its streams reached; this layer knows no read model).
TailCheck = Callable[[Connection, Mapping[str, tuple[int, str]]], list[BrokenLink]]


def ledger_end_problems(
    conn: Connection,
    last_position: int,
    heads: Mapping[str, tuple[int, str]],
    tails: Sequence[TailCheck] = (),
) -> list[BrokenLink]:
    """What a walk of the whole ledger checks once done (``ticketline verify`` and the
    console's verification): the ledger ends where the position counter says (a deleted
    newest event leaves it ahead), each stream where the ``tails`` checks say, and no
    erased customer's personal data is back."""
    found = []
    counter = conn.execute(select(event_sequence.c.last_position)).scalar() or 0
    if counter != last_position:
        removed = " (events at the end were removed)" if counter > last_position else ""
        found.append(
            BrokenLink(
                "ledger_tail",
                "",
                0,
                "",
                last_position,
                f"the position counter is at {counter} but the last event is at "
                f"{last_position}{removed}",
            )
        )
    for check in tails:
        found += check(conn, heads)
    for erasure in erasures_undone(conn):
        found.append(
            BrokenLink(
                "erasure",
                customer_stream_id(erasure.customer_id),
                erasure.stream_version,
                erasure.event_id,
                erasure.position,
                f"customer {erasure.customer_id} was erased at "
                f"{erasure.at:%Y-%m-%d %H:%M:%S}Z, but their "
                "data key, lookups or phone indexes are back (a backup from before the "
                "erasure restored?): starting any service erases them again",
            )
        )
    return found


def link_problems(
    e: EventEnvelope, stored_hash: str, last_position: int, version: int, prev: str
) -> list[tuple[str, str]]:
    """(kind, detail) of each check one event fails in a walk of the whole ledger, given
    the hash of its row as stored (``checked_row``), the position before it and its
    stream's head (version, hash) so far."""
    problems: list[tuple[str, str]] = []
    if e.position != last_position + 1:
        problems.append(("global_sequence", f"position {e.position} follows {last_position}"))
    if e.stream_version != version + 1:
        problems.append(("stream_version", f"version {e.stream_version} follows {version}"))
    if e.prev_hash != prev:
        problems.append(("chain", "prev_hash does not match the previous event's hash"))
    if stored_hash != e.hash:
        problems.append(("hash", "content does not match its hash"))
    return problems


def unreadable_detail(error: Exception) -> str:
    """What a row that makes no event (``checked_row`` raised) is reported with."""
    cause = error.cause if isinstance(error, UnreadableEvent) else error
    return f"the stored row is not an event: {type(cause).__name__}: {cause}"[:500]


class _Walk:
    """One pass over the ledger in global order."""

    def __init__(self, checkpoints: Sequence[HeldCheckpoint]) -> None:
        self.report = VerificationReport()
        self.heads: dict[str, tuple[int, str]] = {}
        self.last_position = 0
        self.last_hash = GENESIS_HASH
        self.due = sorted(checkpoints, key=lambda c: c.position)
        self.by_event_position = {c.event.position: c for c in checkpoints}
        self.digest = StreamHeads() if checkpoints else None
        self.events: dict[int, EventEnvelope] = {}  # the ledger's checkpoint events
        self.states: dict[int, LedgerState] = {}  # by held checkpoint event position

    def step(self, e: EventEnvelope, stored_hash: str, stop_at_first: bool) -> bool:
        """Check one event; False to stop."""
        self.report.events_checked += 1
        version, prev = self.heads.get(e.stream_id, (0, GENESIS_HASH))
        problems = link_problems(e, stored_hash, self.last_position, version, prev)
        for kind, detail in problems:
            self.report.broken.append(
                BrokenLink(kind, e.stream_id, e.stream_version, str(e.event_id), e.position, detail)
            )
        if problems and stop_at_first:
            return False
        if e.position in self.by_event_position:
            self.events[e.position] = e
        self._advance(e.position, e.stream_id, e.stream_version, e.hash)
        return True

    def _advance(self, position: int, stream_id: str, version: int, hash_: str) -> None:
        self.heads[stream_id] = (version, hash_)
        self.last_position, self.last_hash = position, hash_
        if self.digest is not None:
            self.digest.update(stream_id, version, hash_)
            while self.due and self.due[0].position == position:
                self.state_seen(self.due.pop(0))

    def unreadable(self, row: Sequence[Any], error: Exception) -> None:
        """A row that does not make an event: reported (with a gap before it, as any
        event's), and the walk goes on from its stored position and hash (the next event
        of its stream links to that hash)."""
        self.report.events_checked += 1
        position, event_id, stream_id, version = int(row[0]), str(row[1]), str(row[3]), row[4]
        found = [("unreadable", unreadable_detail(error))]
        if position != self.last_position + 1:
            found.append(("global_sequence", f"position {position} follows {self.last_position}"))
        for kind, detail in found:
            self.report.broken.append(
                BrokenLink(kind, stream_id, _int(version), event_id, position, detail)
            )
        self._advance(position, stream_id, _int(version), str(row[-1]))

    def state_seen(self, held: HeldCheckpoint) -> None:
        """The ledger's state at the held checkpoint's position, as the walk sees it."""
        assert self.digest is not None
        self.states[held.event.position] = LedgerState(
            self.last_position, self.last_hash, len(self.digest), self.digest.digest()
        )

    def finish(self, conn: Connection, tails: Sequence[TailCheck]) -> None:
        self.report.streams_checked = len(self.heads)
        self.report.broken += ledger_end_problems(conn, self.last_position, self.heads, tails)
        self.check_held()

    def check_held(self) -> None:
        """Every held checkpoint against the state the walk saw at its position (none:
        the ledger ends before it)."""
        for held in sorted(self.by_event_position.values(), key=lambda c: c.position):
            self.report.checkpoints_checked += 1
            state = self.states.get(held.event.position)
            for detail in held.problems(state, self.events.get(held.event.position)):
                self.report.broken.append(
                    BrokenLink(
                        "checkpoint",
                        held.event.stream_id,
                        held.event.stream_version,
                        str(held.event.event_id),
                        held.position,
                        detail,
                    )
                )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def verify_ledger(
    conn: Connection,
    store: EventStore,
    *,
    batch_size: int = 5000,
    stop_at_first: bool = False,
    checkpoints: Sequence[HeldCheckpoint] = (),
    tails: Sequence[TailCheck] = (),
) -> VerificationReport:
    """Walk every event in global order, checking that positions are contiguous, each
    stream's versions follow one another, each event's prev_hash is its predecessor's
    hash, and each hash matches the event's content (a row that is no event at all —
    a payload edited into something that is not JSON — is reported as ``unreadable``);
    then that the ledger ends where the position counter says it does (a deleted newest
    event leaves the counter ahead), and each stream where ``tails`` say; then, given
    checkpoints held elsewhere, that the ledger's state at each checkpoint's position is
    the one the checkpoint states (a rewritten or truncated history is not, even with
    every hash recomputed). Every problem is reported unless ``stop_at_first``."""
    walk = _Walk(checkpoints)
    while True:
        rows = store.read_rows(conn, after_position=walk.last_position, limit=batch_size)
        if not rows:
            break
        for row in rows:
            try:
                event, stored_hash = checked_row(row)
            except Exception as exc:  # whatever a hand-edited row makes the decoding raise
                walk.unreadable(row, exc)
                if stop_at_first:
                    walk.report.streams_checked = len(walk.heads)
                    return walk.report
                continue
            if not walk.step(event, stored_hash, stop_at_first):
                walk.report.streams_checked = len(walk.heads)
                return walk.report
    walk.finish(conn, tails)
    return walk.report

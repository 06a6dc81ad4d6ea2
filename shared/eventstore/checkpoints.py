"""Chain-head checkpoints: what a checkpoint states about the ledger, and how the ledger is
checked against checkpoints held elsewhere (docs/checkpoints.md).

The **streams digest** at position P (scheme ``sha256-buckets-256/v1``):

1. every stream with events up to P contributes one line, ``canonical JSON of
   [stream_id, version, hash]`` + ``"\\n"``, for its last event at or before P;
2. a stream goes to bucket ``int(sha256(stream_id)[:2], 16)`` (0–255); a bucket's digest
   is the SHA-256 (hex) of its lines, sorted by stream id (Unicode code points);
3. the streams digest is the SHA-256 (hex) of the 256 bucket digests, concatenated in
   bucket order.

Each stream's head hash covers its whole chain (every event's hash covers its content,
its position and its predecessor's hash), so the digest covers every event up to P: a
changed, removed, inserted or reordered event changes it, even if whoever changed it
recomputed every hash. The buckets keep a verifier's work per checkpoint proportional to
the streams that moved since the previous one, not to all streams.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from json.encoder import encode_basestring

from sqlalchemy import Connection, text

from shared.kernel.events.envelope import EventEnvelope, canonical_json

CHECKPOINT_STREAM = "ledger:checkpoints"
BUCKETS = 256
_EMPTY = hashlib.sha256(b"").hexdigest()


def bucket_of(stream_id: str) -> int:
    """``int(sha256(stream_id)[:2], 16)``: the digest's first byte."""
    return hashlib.sha256(stream_id.encode("utf-8")).digest()[0]


def leaf(stream_id: str, version: int, hash_: str) -> str:
    """``canonical_json([stream_id, version, hash_]) + "\\n"``, spelled out: a checkpoint
    makes one per stream while holding the GIL, and json.dumps costs five times this."""
    return f"[{encode_basestring(stream_id)},{int(version)},{encode_basestring(hash_)}]\n"


class StreamHeads:
    """Every stream's head, kept up to date event by event; ``digest()`` recomputes only
    the buckets that changed since it was last called."""

    def __init__(self) -> None:
        self._heads: list[dict[str, tuple[int, str]]] = [{} for _ in range(BUCKETS)]
        self._bucket: dict[str, int] = {}
        self._digests = [_EMPTY] * BUCKETS
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self._bucket)

    def update(self, stream_id: str, version: int, hash_: str) -> None:
        bucket = self._bucket.get(stream_id)
        if bucket is None:
            bucket = self._bucket[stream_id] = bucket_of(stream_id)
        self._heads[bucket][stream_id] = (version, hash_)
        self._dirty.add(bucket)

    def digest(self) -> str:
        for bucket in self._dirty:
            heads = self._heads[bucket]
            lines = "".join(leaf(sid, *heads[sid]) for sid in sorted(heads))
            self._digests[bucket] = hashlib.sha256(lines.encode("utf-8")).hexdigest()
        self._dirty.clear()
        return hashlib.sha256("".join(self._digests).encode("ascii")).hexdigest()


_HEADS_AT = text(
    "SELECT e.stream_id, e.stream_version, e.hash FROM events AS e JOIN ("
    "SELECT stream_id, MAX(stream_version) AS version FROM events WHERE position <= :p "
    "GROUP BY stream_id) AS m ON e.stream_id = m.stream_id AND e.stream_version = m.version"
)
_HEADS_SINCE = text(
    "SELECT stream_id, stream_version, hash FROM events "
    "WHERE position > :a AND position <= :b ORDER BY position"
)
_HASH_AT = text("SELECT hash FROM events WHERE position = :p")
_LAST_CHECKPOINT = text(
    "SELECT position, stream_version, hash FROM events WHERE stream_id = :s "
    "ORDER BY stream_version DESC LIMIT 1"
)


@dataclass(frozen=True)
class LedgerState:
    """What a checkpoint at ``position`` states (before it is signed)."""

    position: int
    head_hash: str
    streams: int
    streams_digest: str

    def body(self) -> dict[str, object]:
        return {
            "position": self.position,
            "head_hash": self.head_hash,
            "streams": self.streams,
            "streams_digest": self.streams_digest,
        }


class LedgerHeads:
    """The stream heads up to the last position it was advanced to, kept between the
    checkpoint job's passes: each pass reads only the events appended since (the first
    reads every stream's head), not the whole ledger again."""

    def __init__(self) -> None:
        self._heads = StreamHeads()
        self._position = 0
        self._hash: str | None = None

    def advance(self, conn: Connection, position: int) -> LedgerState | None:
        """The ledger's state at ``position`` (None when no event is there). Positions
        up to a visible one are all committed and visible, and a stream's versions grow
        with their positions, so the events since the last pass, in order, update the
        heads to ``position``. A ledger that no longer holds the last pass's event (one
        restored from a backup) is read afresh."""
        head_hash = conn.execute(_HASH_AT, {"p": position}).scalar()
        if head_hash is None:
            return None
        if (
            self._hash is None
            or position < self._position
            or self._hash != conn.execute(_HASH_AT, {"p": self._position}).scalar()
        ):
            self._heads = StreamHeads()
            rows = conn.execute(_HEADS_AT, {"p": position})
        else:
            rows = conn.execute(_HEADS_SINCE, {"a": self._position, "b": position})
        for stream_id, version, hash_ in rows:
            self._heads.update(stream_id, version, hash_)
        self._position, self._hash = position, head_hash
        return LedgerState(position, head_hash, len(self._heads), self._heads.digest())


@dataclass(frozen=True)
class LastCheckpoint:
    """The checkpoint stream's head: where its last event sits."""

    position: int
    version: int
    hash: str


def last_checkpoint(conn: Connection) -> LastCheckpoint | None:
    row = conn.execute(_LAST_CHECKPOINT, {"s": CHECKPOINT_STREAM}).first()
    return LastCheckpoint(*row) if row else None


def signed_bytes(payload: dict[str, object]) -> bytes:
    """What the signature covers: the canonical JSON of every field but the signature."""
    return canonical_json({k: v for k, v in payload.items() if k != "signature"}).encode()


@dataclass(frozen=True)
class HeldCheckpoint:
    """A checkpoint as a subscriber kept it: its event, as published."""

    event: EventEnvelope

    @property
    def position(self) -> int:
        return int(self.event.payload["position"])

    def problems(self, state: LedgerState | None, ledger_event: EventEnvelope | None) -> list[str]:
        """How the ledger disagrees with this checkpoint (``state``: the ledger's state
        at the checkpoint's position; ``ledger_event``: the ledger's event at the
        checkpoint event's own position)."""
        payload = self.event.payload
        mine = f"the checkpoint at position {self.event.position}"  # each detail names both
        if state is None:
            return [
                f"the ledger has no event at position {self.position}, which {mine} covers "
                "(the history was truncated)"
            ]
        found = []
        if state.head_hash != payload["head_hash"]:
            found.append(f"the event at position {self.position} is not the one {mine} covers")
        if (state.streams, state.streams_digest) != (payload["streams"], payload["streams_digest"]):
            found.append(
                f"the streams at position {self.position} differ from {mine} "
                f"({state.streams} streams, digest {state.streams_digest[:12]}…; checkpointed "
                f"{payload['streams']}, {str(payload['streams_digest'])[:12]}…): the history "
                "up to there was rewritten"
            )
        if ledger_event is None or ledger_event.hash != self.event.hash:
            found.append(
                f"the checkpoint event at position {self.event.position} is not in the ledger "
                "as it was published"
            )
        return found

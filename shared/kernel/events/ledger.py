"""Events about the ledger itself: signed chain-head checkpoints (docs/checkpoints.md).

A checkpoint states, at a global position, the hash of the event there and a digest of
every stream's head (its version and hash) — which, through each stream's hash chain,
covers every event up to that position. It is signed with the platform's Ed25519 key
and published on the event stream (topic ``ticketline.ledger``), so a regional center
that keeps checkpoints can later show that the history was rewritten or truncated, even
by the operator who holds the database.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from shared.kernel.events.envelope import EventPayload

DIGEST_SCHEME: Final = "sha256-buckets-256/v1"
SIGNATURE_ALGORITHM: Final = "ed25519"


class LedgerCheckpointed(EventPayload, event_type="LedgerCheckpointed", stream_type="ledger"):
    """The ledger's state at a global position, signed by the platform."""

    position: int = Field(ge=1, description="Events 1..position are covered.")
    head_hash: str = Field(
        pattern="^[0-9a-f]{64}$", description="The hash of the event at `position`."
    )
    streams: int = Field(ge=1, description="Streams with events up to `position`.")
    streams_digest: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="Digest of every stream's (id, version, hash) at `position`, by "
        "`digest_scheme` (docs/checkpoints.md).",
    )
    digest_scheme: Literal["sha256-buckets-256/v1"] = DIGEST_SCHEME
    algorithm: Literal["ed25519"] = SIGNATURE_ALGORITHM
    key_id: str = Field(
        pattern="^[0-9a-f]{16}$",
        description="First 16 hex digits of the SHA-256 of the raw Ed25519 public key.",
    )
    signature: str = Field(
        pattern="^[0-9a-f]{128}$",
        description="Ed25519 signature (hex) of the canonical JSON of the other fields.",
    )

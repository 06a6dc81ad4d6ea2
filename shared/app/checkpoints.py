"""Signed chain-head checkpoints: the periodic job that appends them, their Ed25519 key,
and reading checkpoints a subscriber kept (docs/checkpoints.md).

Why Ed25519 and not the audit export's HMAC: an HMAC is checked with the very key that
makes it, so a regional center could only verify a checkpoint by holding a key that also
lets it forge one — and then a checkpoint it produces proves nothing to a third party
(an auditor, a court) about what the platform stated. With a signature the platform
keeps the private key; centers and auditors verify with the public key
(``ticketline checkpoint-key``), and a held checkpoint is evidence that the platform
itself stated that history at that position.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError
from sqlalchemy import Connection

from shared.app.config import Settings
from shared.app.executor import Executor
from shared.app.files import key_file
from shared.app.jobs import run_leased
from shared.app.key_files import ed25519_private_key, pem_text_or_file
from shared.app.platform import Platform
from shared.eventstore.checkpoints import (
    CHECKPOINT_STREAM,
    HeldCheckpoint,
    LedgerHeads,
    LedgerState,
    last_checkpoint,
    signed_bytes,
)
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import ConcurrencyError, EventStore, StreamAppend, StreamHead
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext, EventEnvelope
from shared.kernel.events.ledger import LedgerCheckpointed

log = logging.getLogger(__name__)

SERVICE = "ledger"
LEASE_NAME = "ledger-checkpoints"
KEY_FILE = "checkpoint-signing.pem"


# --- keys ---------------------------------------------------------------------------------


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """``TICKETLINE_CHECKPOINT_SIGNING_KEY`` (PEM text, or the path of a PEM file), or
    (embedded default) a key generated once into the data directory."""
    if settings.checkpoint_signing_key:
        # (checked at start: a key that does not load refuses the start)
        return ed25519_private_key(
            pem_text_or_file(settings.checkpoint_signing_key.get_secret_value())
        )
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists() and not settings.is_sqlite:
        # Scaled: each jobs process would sign with its own key.
        log.warning(
            "no TICKETLINE_CHECKPOINT_SIGNING_KEY: generating a checkpoint signing key "
            "into %s; every jobs process must sign with one key (docs/checkpoints.md)",
            path,
        )
    pem = key_file(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return ed25519_private_key(pem)


def verifying_key(settings: Settings) -> Ed25519PublicKey | None:
    """The platform's own public key, if this machine has the signing key (configured, or
    generated into the data directory); never generates one."""
    if settings.checkpoint_signing_key or (Path(settings.data_dir) / KEY_FILE).exists():
        return signing_key(settings).public_key()
    return None


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(state: LedgerState, key: Ed25519PrivateKey) -> LedgerCheckpointed:
    unsigned = {
        **state.body(),
        "digest_scheme": "sha256-buckets-256/v1",
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
    }
    signature = key.sign(signed_bytes(unsigned)).hex()
    return LedgerCheckpointed.model_validate({**unsigned, "signature": signature})


def signature_valid(payload: dict[str, object], key: Ed25519PublicKey) -> bool:
    try:
        key.verify(bytes.fromhex(str(payload.get("signature", ""))), signed_bytes(payload))
    except (InvalidSignature, ValueError):
        return False
    return payload.get("key_id") == key_id(key)


# --- the job ------------------------------------------------------------------------------


def executor(platform: Platform) -> Executor:
    """Appends through the one write path (no inline read models for this stream)."""
    return Executor(platform.store, platform.runner, platform.clock, {})


async def checkpoint_once(
    platform: Platform, key: Ed25519PrivateKey, heads: LedgerHeads | None = None
) -> EventEnvelope | None:
    """Append a checkpoint of the ledger as it stands, unless nothing was appended since
    the last one (it would only cover itself). None when there was nothing to do or
    another process appended one at the same time. ``heads``: the job's, kept from its
    previous pass."""
    heads = heads or LedgerHeads()

    def facts(conn: Connection) -> tuple[LedgerState | None, StreamHead]:
        head = int(platform.store.last_position(conn))
        last = last_checkpoint(conn)
        stream = StreamHead(last.version, last.hash) if last else StreamHead()
        if head == 0 or (last is not None and last.position == head):
            return None, stream
        return heads.advance(conn, head), stream

    state, stream = await platform.db.read(facts)
    if state is None:
        return None
    payload = sign(state, key)
    context = CommandContext(actor=SYSTEM_ACTOR, service=SERVICE)
    append = StreamAppend(CHECKPOINT_STREAM, [payload], stream)
    try:
        (written,) = await platform.db.write(
            lambda c: executor(platform).commit(c, context, [append])
        )
    except ConcurrencyError:
        return None
    log.info(
        "checkpoint at position %d (%d streams) appended at %d",
        state.position,
        state.streams,
        written.position,
    )
    return written


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    """Every ``checkpoint_interval_seconds``, in the process holding the lease."""
    settings = platform.settings
    key = signing_key(settings)
    lease = Lease(
        platform.db, LEASE_NAME, relay_owner_id(), settings.checkpoint_lease_seconds, platform.clock
    )
    await run_leased(
        lease,
        stop,
        settings.checkpoint_interval_seconds,
        partial(checkpoint_once, platform, key, LedgerHeads()),
    )


# --- the ledger's own checkpoints ---------------------------------------------------------


@dataclass
class OwnCheckpoint:
    """The ledger's last checkpoint signed with this key, to check the history against —
    found intact and signed (``checkpoint``), or what is wrong with it (``problems``)."""

    checkpoint: HeldCheckpoint | None
    problems: list[str]


def own_checkpoint(conn: Connection, store: EventStore, key: Ed25519PublicKey) -> OwnCheckpoint:
    """Whoever rewrites the history without the signing key (recomputing every hash) cannot
    sign a checkpoint of it: the last one the platform signed still states the old
    history's digest. (A copy held elsewhere is stronger: it also survives the removal
    of the ledger's checkpoints.)"""
    mine = key_id(key)
    for event, stored_hash in reversed(store.read_stream_checked(conn, CHECKPOINT_STREAM)):
        if event.payload.get("key_id") != mine:
            continue  # an older key's (rotated): checked with that key's holder's copy
        where = f"the ledger's checkpoint at position {event.position}"
        if stored_hash != event.hash or event.computed_hash() != event.hash:
            return OwnCheckpoint(None, [f"{where} does not match its hash"])
        if not signature_valid(event.payload, key):
            return OwnCheckpoint(None, [f"{where} is not signed by the platform key"])
        return OwnCheckpoint(HeldCheckpoint(event), [])
    return OwnCheckpoint(None, [])


# --- checkpoints held elsewhere -------------------------------------------------------------


@dataclass
class HeldFile:
    checkpoints: list[HeldCheckpoint]
    problems: list[str]
    lines: int


def read_held(path: Path, key: Ed25519PublicKey) -> HeldFile:
    """The checkpoint events among the JSON lines of ``path`` (e.g. `ticketline subscribe`
    output: other events are ignored), each checked on its own: intact (its hash) and
    signed by ``key``. Problems name the line."""
    held = HeldFile([], [], 0)
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        held.lines += 1
        try:
            document = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            held.problems.append(f"line {number}: not UTF-8 text")
            continue
        except json.JSONDecodeError:
            held.problems.append(f"line {number}: not JSON")
            continue
        if not isinstance(document, dict):  # every line an event stream gives is an object
            held.problems.append(f"line {number}: not a JSON object (an event)")
            continue
        if document.get("event_type") != "LedgerCheckpointed":
            continue
        try:
            event = EventEnvelope.model_validate(document)
            LedgerCheckpointed.model_validate(event.payload)
        except ValidationError as exc:
            held.problems.append(
                f"line {number}: not a checkpoint event ({exc.error_count()} errors)"
            )
            continue
        if event.computed_hash() != event.hash:
            held.problems.append(f"line {number}: the checkpoint event does not match its hash")
        elif not signature_valid(event.payload, key):
            held.problems.append(f"line {number}: the signature is not the platform key's")
        else:
            held.checkpoints.append(HeldCheckpoint(event))
    if not held.checkpoints and not held.problems:
        # Nothing to check the ledger against: "ok" would claim a check that never ran.
        held.problems.append(f"{path}: no checkpoint event (LedgerCheckpointed) in the file")
    return held

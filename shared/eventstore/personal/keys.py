"""The key hierarchy of personal data (docs/personal-data.md, "Keys"):

    master key (a file, a secret, or a KMS — ``MasterKey``)
      └─ wraps the key-encryption key and the blind-index secret   (personal_data_master)
           └─ the key-encryption key wraps one data key per customer (personal_data_keys)
                └─ a data key seals that customer's personal fields (AES-256-GCM)

The master key is used once per process start (one unwrap), so a KMS round trip never
sits on a request. Data keys are cached in memory for ``cache_seconds``, loaded in
batches; erasure destroys the wrapped data key, after which the customer's fields show
``[erased]`` wherever they are stored. A data key that no longer unwraps (a corrupted
row) shows ``[unreadable]`` and raises the ``ticketline_personal_data_unreadable`` metric.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from base64 import urlsafe_b64decode
from binascii import b2a_base64
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, bindparam, select, text

from shared.eventstore.metrics import PERSONAL_DATA_UNREADABLE, note_committed
from shared.eventstore.personal.tables import personal_data_keys
from shared.kernel.errors import DomainError

log = logging.getLogger(__name__)

_MASTER_CONTEXT = b"ticketline/personal-data/master/v1"
_NONCE = 12
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class MasterKeyMismatch(RuntimeError):
    """The configured master key does not unwrap this database's keys: refuse to start."""


class MasterKeyMissing(ValueError):
    """The master key that would unwrap this database's keys is not there (a key file not
    restored beside the database): never replaced by a new one."""


class PersonalDataUnavailable(DomainError):
    """A customer's data key exists but cannot be read (HTTP 503): nothing about that
    customer can be recorded until the key row is restored from a backup."""

    status_code = 503


class MasterKey(Protocol):
    """What wraps the key-encryption key. ``LocalMasterKey`` is AES-256-GCM with a key from
    a file or a secret; a KMS adapter implements the same three members (docs)."""

    @property
    def key_id(self) -> str:
        """A name for the key (never the key): stored beside what it wrapped."""
        ...

    def wrap(self, plaintext: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The plaintext; raises when ``wrapped`` was not wrapped by this key."""
        ...


class LocalMasterKey:
    """A 256-bit master key held in this process (embedded default: a file in the data
    directory; scaled: a mounted secret)."""

    def __init__(self, key: bytes, source: str = "local") -> None:
        if len(key) != 32:
            raise ValueError("a master key is 32 bytes (64 hex digits)")
        self._aead = AESGCM(key)
        fingerprint = hashlib.sha256(b"ticketline master key id\0" + key).hexdigest()[:16]
        self._key_id = f"{source}:{fingerprint}"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], context)


KeyState = Literal["active", "erased", "unreadable"]
RotationResult = Literal["rotated", "already", "no_keys"]


class DataKey:
    """One customer's data key (``secret``, None once erased or when unreadable).

    The cache holds up to 100,000 of these: only the 32 key bytes are kept, and the
    cipher object (about 2.4 kB of OpenSSL state each) is made per call, for about 1 µs —
    an import of 100k new customers otherwise grew by 300 MB (``sealer`` serves a
    whole event's values)."""

    __slots__ = ("aad", "customer_id", "header", "secret", "state")

    def __init__(self, customer_id: str, state: KeyState, secret: bytes | None = None) -> None:
        self.customer_id = customer_id
        self.state: KeyState = state
        self.secret = secret
        # The token's header, also its associated data: a value sealed for one customer
        # does not open as another's.
        self.header = f"pd1.{customer_id}."
        self.aad = self.header.encode()

    def sealer(self) -> Callable[[str], str] | None:
        """A function sealing values with this key, one cipher for a whole event's values
        (None once erased or unreadable)."""
        if self.secret is None:
            return None
        encrypt, aad, header = AESGCM(self.secret).encrypt, self.aad, self.header

        def seal(value: str) -> str:
            nonce = os.urandom(_NONCE)
            sealed = b2a_base64(nonce + encrypt(nonce, value.encode(), aad), newline=False)
            return header + sealed.translate(_URLSAFE).rstrip(b"=").decode("ascii")

        return seal

    def open(self, token: str) -> str:
        """The clear value; raises ``InvalidTag`` when the ciphertext was altered."""
        assert self.secret is not None
        data = token[len(self.header) :]
        raw = urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return AESGCM(self.secret).decrypt(raw[:_NONCE], raw[_NONCE:], self.aad).decode()


_MASTER_ROW = text("SELECT master_key_id, wrapped FROM personal_data_master WHERE id = 1")
_NEW_MASTER = text(
    "INSERT INTO personal_data_master (id, master_key_id, wrapped, created_at) "
    "VALUES (1, :key_id, :wrapped, :at) ON CONFLICT (id) DO NOTHING"
)
# Compare-and-set: a rotation replaces exactly the wrapping it unwrapped.
_REWRAP_MASTER = text(
    "UPDATE personal_data_master SET master_key_id = :key_id, wrapped = :wrapped "
    "WHERE id = 1 AND wrapped = :before"
)
_KEYS = select(personal_data_keys.c.customer_id, personal_data_keys.c.wrapped_key).where(
    personal_data_keys.c.customer_id.in_(bindparam("ids", expanding=True))
)


class _Cache:
    """Data keys by customer id; entries expire. Past ``size`` it starts afresh (keys are
    cheap to load again). Lock-free: each dict operation is atomic, a race only reloads."""

    def __init__(self, seconds: float, size: int, clock: Callable[[], float]) -> None:
        self.seconds, self.size, self.clock = seconds, size, clock
        self._entries: dict[str, tuple[DataKey, float]] = {}

    def get(self, customer_id: str) -> DataKey | None:
        found = self._entries.get(customer_id)
        if found is None:
            return None
        if self.clock() - found[1] > self.seconds:
            self._entries.pop(customer_id, None)
            return None
        return found[0]

    def put(self, key: DataKey) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key.customer_id] = (key, self.clock())

    def drop(self, customer_id: str) -> None:
        self._entries.pop(customer_id, None)


class KeyRing:
    """The unwrapped key-encryption key, the blind-index secret and a cache of data keys.
    Every method is a step of a unit of work (runs on the caller's connection)."""

    def __init__(
        self,
        master: MasterKey,
        *,
        cache_seconds: float = 60.0,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master = master
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache = _Cache(cache_seconds, cache_size, clock)
        self._kek: AESGCM | None = None
        self._index: bytes | None = None
        self._keyed: hmac.HMAC | None = None

    # --- the master row -------------------------------------------------------------------

    def ready(self, conn: Connection, *, create: bool = False) -> bool:
        """Unwrap the key-encryption key (once per process). With ``create`` (a write unit
        of work), a database without keys gets its master row. Raises ``MasterKeyMismatch``
        when the configured master key is not the one that wrapped it."""
        return self._secrets(conn, create=create) is not None

    def _secrets(self, conn: Connection, *, create: bool) -> tuple[AESGCM, bytes] | None:
        if self._kek is not None and self._index is not None:
            return self._kek, self._index
        row = conn.execute(_MASTER_ROW).first()
        fresh = False
        if row is None:
            if not create:
                return None
            wrapped = self.master.wrap(os.urandom(64), _MASTER_CONTEXT)
            params = {"key_id": self.master.key_id, "wrapped": wrapped, "at": _now()}
            fresh = conn.execute(_NEW_MASTER, params).rowcount == 1
            row = conn.execute(_MASTER_ROW).one()
        secrets = self._unwrap_master(row)
        kek, index = AESGCM(secrets[:32]), secrets[32:]
        if fresh:  # ours until our transaction commits: kept in memory only then
            note_committed(conn.info, lambda: self._set(kek, index))
        else:
            self._set(kek, index)
        return kek, index

    def _set(self, kek: AESGCM, index: bytes) -> None:
        self._kek, self._index = kek, index
        # Keyed once: a copy per digest skips OpenSSL's digest lookup and the key's padding
        # (2.3 µs against 6.7 µs; a TicketReceived takes two).
        self._keyed = hmac.new(index, digestmod=hashlib.sha256)

    def _unwrap_master(self, row: Any) -> bytes:
        try:
            return self.master.unwrap(bytes(row.wrapped), _MASTER_CONTEXT)
        except MasterKeyMissing as exc:
            raise MasterKeyMismatch(
                f"{exc}: this database's keys are wrapped with the key {row.master_key_id}; "
                "restore that key file from your key backup (docs/personal-data.md), or "
                "configure the key elsewhere (TICKETLINE_PRIVACY_MASTER_KEY, "
                "TICKETLINE_PRIVACY_MASTER_KEY_FILE); refusing to read or write personal data"
            ) from None
        except (InvalidTag, ValueError) as exc:
            raise MasterKeyMismatch(
                f"the configured personal-data master key ({self.master.key_id}) is not the "
                f"one this database's keys are wrapped with ({row.master_key_id}): configure "
                "that key (TICKETLINE_PRIVACY_MASTER_KEY, TICKETLINE_PRIVACY_MASTER_KEY_FILE, "
                "or the data directory's personal-data-master.key); refusing to read or write "
                "personal data"
            ) from exc

    def rotate_master(self, conn: Connection, new: MasterKey) -> RotationResult:
        """Wrap the key-encryption key and blind-index secret with ``new`` in place of the
        configured master key: one row, the data keys and every sealed value unchanged.
        ``already`` when ``new`` wraps them (a rerun); ``no_keys`` on a database that has
        none yet. Raises ``MasterKeyMismatch`` when the configured key does not unwrap them,
        ``RuntimeError`` when another rotation changed the row meanwhile."""
        row = conn.execute(_MASTER_ROW).first()
        if row is None:
            return "no_keys"
        before = bytes(row.wrapped)
        try:
            new.unwrap(before, _MASTER_CONTEXT)
            return "already"
        except (InvalidTag, ValueError):
            pass
        wrapped = new.wrap(self._unwrap_master(row), _MASTER_CONTEXT)
        params = {"key_id": new.key_id, "wrapped": wrapped, "before": before}
        if conn.execute(_REWRAP_MASTER, params).rowcount != 1:
            raise RuntimeError("the master row changed during the rotation: run it again")
        return "rotated"

    def _kek_for(self, conn: Connection, *, create: bool) -> AESGCM | None:
        found = self._secrets(conn, create=create)
        return found[0] if found else None

    # --- blind indexes ----------------------------------------------------------------------

    def digest(
        self, conn: Connection, label: str, value: str, *, create: bool = False
    ) -> str | None:
        """Keyed HMAC of ``value`` (a blind index); None while the database has no keys
        (so nothing has been indexed either)."""
        keyed = self._keyed
        if keyed is None:
            found = self._secrets(conn, create=create)
            if found is None:
                return None
            # Still unset when this transaction made the secret (kept once it commits).
            keyed = self._keyed or hmac.new(found[1], digestmod=hashlib.sha256)
        digest = keyed.copy()
        digest.update(f"{label}\0{value}".encode())
        return digest.hexdigest()[:40]

    # --- data keys ---------------------------------------------------------------------------

    def key(self, conn: Connection, customer_id: str) -> DataKey:
        """One customer's data key (cached, else loaded)."""
        found = self._cache.get(customer_id)
        return found if found is not None else self.keys(conn, [customer_id])[customer_id]

    def keys(self, conn: Connection, customer_ids: Iterable[str]) -> dict[str, DataKey]:
        """The data keys of these customers, missing ones loaded with one query (per 500).

        Cached at once, even from a transaction that may still roll back: a customer id is
        only ever handed out by ``PersonalData.customer_for`` from the database or from a
        memo filled once the creating transaction committed, so a key cached from a
        rolled-back creation belongs to an id nothing will use."""
        found: dict[str, DataKey] = {}
        missing: list[str] = []
        for customer_id in set(customer_ids):
            key = self._cache.get(customer_id)
            if key is None:
                missing.append(customer_id)
            else:
                found[customer_id] = key
        if not missing:
            return found
        kek = self._kek_for(conn, create=False)
        rows: dict[str, Any] = {}
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows.update((r[0], r[1]) for r in conn.execute(_KEYS, {"ids": chunk}))
        for customer_id in missing:
            key = self._unwrap(kek, customer_id, rows, customer_id in rows)
            found[customer_id] = key
            self._cache.put(key)
        return found

    def _unwrap(
        self, kek: AESGCM | None, customer_id: str, rows: dict[str, Any], known: bool
    ) -> DataKey:
        wrapped = rows.get(customer_id)
        if known and wrapped is None:
            return DataKey(customer_id, "erased")
        try:
            if kek is None or wrapped is None:
                raise InvalidTag
            raw = bytes(wrapped)
            plain = kek.decrypt(raw[:_NONCE], raw[_NONCE:], customer_id.encode())
        except (InvalidTag, ValueError):
            PERSONAL_DATA_UNREADABLE.labels(what="key").inc()
            log.error("personal data: the data key of customer %s is unreadable", customer_id)
            return DataKey(customer_id, "unreadable")
        return DataKey(customer_id, "active", plain)

    def new_key(self, conn: Connection, customer_id: str) -> tuple[DataKey, bytes]:
        """A fresh data key for a new customer and its wrapped form (to store)."""
        kek = self._kek_for(conn, create=True)
        assert kek is not None
        plain = os.urandom(32)
        nonce = os.urandom(_NONCE)
        wrapped = nonce + kek.encrypt(nonce, plain, customer_id.encode())
        return DataKey(customer_id, "active", plain), wrapped

    def remember(self, key: DataKey) -> None:
        """Cache a key this unit of work created."""
        self._cache.put(key)

    def forget(self, customer_id: str) -> None:
        self._cache.drop(customer_id)


def _now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)

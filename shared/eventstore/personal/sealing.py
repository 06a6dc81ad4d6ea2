"""Sealing personal fields on append, opening them for those who need clear values, and
erasure (crypto-shredding).

- ``seal`` runs inside ``EventStore.append`` — every writer (commands, reactors, jobs,
  imports) goes through it — so the ledger, the outbox, Kafka, SSE and exports only ever
  hold ``pd1.…`` tokens and the hash chain covers them.
- ``open_events`` / ``open_tokens`` are the explicit decryption step: the executor's
  loads (deciders compare old and new contact details), and responses for callers who may
  see the values. Read models copy the tokens as stored; they never hold a clear value.
- ``erase`` destroys a customer's data key and blind indexes in the caller's transaction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import orjson
from cryptography.exceptions import InvalidTag
from sqlalchemy import Connection, text

from shared.eventstore.ledger import StreamAppend
from shared.eventstore.metrics import PERSONAL_DATA_UNREADABLE, note_committed
from shared.eventstore.personal.keys import DataKey, KeyRing, PersonalDataUnavailable
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import EventEnvelope, EventPayload, PendingEvent
from shared.kernel.events.registry import UnknownEventType, payload_class, upcast
from shared.kernel.ids import uuid7
from shared.kernel.personal import (
    ERASED,
    UNREADABLE,
    Path,
    PersonalField,
    get_path,
    is_sealed,
    normalise_name,
    personal_fields,
    replace_paths,
    sealed_customer,
)

_LOOKUP = text("SELECT customer_id FROM personal_data_keys WHERE lookup = :lookup")
_NEW_CUSTOMER = text(
    "INSERT INTO personal_data_keys (customer_id, lookup, wrapped_key, created_at, legal_hold) "
    "VALUES (:customer_id, :lookup, :wrapped, :at, false) ON CONFLICT (lookup) DO NOTHING"
)
_NEW_PHONE = text(
    "INSERT INTO personal_data_phones (digest, customer_id) VALUES (:digest, :customer_id) "
    "ON CONFLICT (digest, customer_id) DO NOTHING"
)
_FIRST_EVENT = text(
    "SELECT event_type, schema_version, payload FROM events "
    "WHERE stream_id = :stream_id AND stream_version = 1"
)
_ERASE_KEY = text(
    "UPDATE personal_data_keys SET wrapped_key = NULL, lookup = NULL, erased_at = :at "
    "WHERE customer_id = :customer_id"
)
_ERASE_PHONES = text("DELETE FROM personal_data_phones WHERE customer_id = :customer_id")
_LEGAL_HOLD = text(
    "UPDATE personal_data_keys SET legal_hold = :hold WHERE customer_id = :customer_id"
)


class StoredPayload:
    """A payload in its stored form (personal fields sealed): what the ledger's append asks
    of a payload — its type, version, stream type and JSON body — and nothing else."""

    __slots__ = ("body", "event_type", "schema_version", "stream_type")

    def __init__(self, payload: EventPayload, body: dict[str, Any]) -> None:
        self.event_type = payload.event_type
        self.schema_version = payload.schema_version
        self.stream_type = payload.stream_type
        self.body = body

    def model_dump(self, *, mode: str = "json") -> dict[str, Any]:
        return self.body


class _Bounded(dict[Any, Any]):
    """A memo that starts afresh past its size (entries are cheap to find again)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            if len(self) >= self.size:
                self.clear()
            self[key] = value


class PersonalData:
    """The personal-data store of one platform: its key ring and who the customers are."""

    def __init__(self, ring: KeyRing, clock: Clock | None = None) -> None:
        self.ring = ring
        self.clock = clock or SystemClock()
        self._streams = _Bounded(200_000)  # stream id → customer id
        self._phones = _Bounded(200_000)  # (phone digest, customer id) → True (committed)

    # --- who the customer is ------------------------------------------------------------------

    def phone_digest(self, conn: Connection, phone: str, *, create: bool = False) -> str | None:
        """The blind index of a phone number (digits as stored); None while no customer
        exists at all."""
        return self.ring.digest(conn, "phone", phone, create=create)

    def customer_for(self, conn: Connection, name: str, phone: str) -> str:
        """The customer with this name and phone, created (with a data key) when new. Asked
        of the database every time: an erased customer's lookup is gone at once."""
        lookup = self.ring.digest(conn, "customer", f"{normalise_name(name)}\0{phone}", create=True)
        found = conn.execute(_LOOKUP, {"lookup": lookup}).scalar()
        if found is not None:
            return str(found)
        customer_id = str(uuid7())
        key, wrapped = self.ring.new_key(conn, customer_id)
        params = {"customer_id": customer_id, "lookup": lookup, "wrapped": wrapped}
        if conn.execute(_NEW_CUSTOMER, {**params, "at": self.clock.now()}).rowcount == 1:
            self.ring.remember(key)
            return customer_id
        return str(conn.execute(_LOOKUP, {"lookup": lookup}).scalar_one())

    def find_customer(self, conn: Connection, name: str, phone: str) -> str | None:
        """The customer with this name and phone (digits as stored), if there is one."""
        lookup = self.ring.digest(conn, "customer", f"{normalise_name(name)}\0{phone}")
        if lookup is None:
            return None
        found = conn.execute(_LOOKUP, {"lookup": lookup}).scalar()
        return None if found is None else str(found)

    def set_legal_hold(self, conn: Connection, customer_id: str, active: bool) -> None:
        """Kept beside the key, so the retention job's query sees it."""
        conn.execute(_LEGAL_HOLD, {"customer_id": customer_id, "hold": active})

    # --- writing ------------------------------------------------------------------------------

    def seal(self, conn: Connection, appends: Sequence[StreamAppend]) -> list[StreamAppend]:
        """The appends with every payload that has personal fields replaced by its stored
        form (called by ``EventStore.append``: every writer goes through it)."""
        out: list[StreamAppend] = []
        for append in appends:
            events = [e if isinstance(e, PendingEvent) else PendingEvent(e) for e in append.events]
            if not any(personal_fields(type(e.payload)) for e in events):
                out.append(append)
                continue
            stored = [
                PendingEvent(self._stored(conn, append.stream_id, e.payload), e.occurred_at)
                for e in events
            ]
            out.append(replace(append, events=stored))
        return out

    def _stored(self, conn: Connection, stream_id: str, payload: EventPayload) -> EventPayload:
        body = payload.model_dump(mode="json")
        if personal_fields(type(payload)):
            body = self.seal_body(conn, stream_id, payload, body)
        return cast(EventPayload, StoredPayload(payload, body))

    def seal_body(
        self, conn: Connection, stream_id: str, payload: EventPayload, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``body`` (the payload as JSON types) with its personal fields sealed by the data
        subject's key — or ``[erased]`` once that customer is erased."""
        fields = personal_fields(type(payload))
        if not fields:
            return body
        customer_id = self._subject(conn, stream_id, type(payload), body)
        key = self.ring.keys(conn, [customer_id])[customer_id]
        if key.state == "unreadable":
            raise PersonalDataUnavailable(
                "personal_data_key_unreadable",
                "this customer's data key cannot be read; restore it from a backup",
            )
        clear = {f.path: v for f in fields if isinstance(v := get_path(body, f.path), str)}
        nonces = os.urandom(12 * len(clear))
        values: dict[Path, Any] = {}
        for n, (path, value) in enumerate(clear.items()):
            values[path] = (
                ERASED if key.aead is None else key.seal(value, nonces[12 * n : 12 * n + 12])
            )
        if payload.data_subject:
            values[(payload.data_subject,)] = customer_id
        if key.aead is not None:
            self._index_phones(conn, customer_id, fields, clear)
        return replace_paths(body, values)

    def _subject(
        self, conn: Connection, stream_id: str, cls: type[EventPayload], body: Mapping[str, Any]
    ) -> str:
        """The customer the event is about: named by the event that opens the stream (in
        this event, or the stream's first one)."""
        if cls.data_subject is None:
            found = self._streams.get(stream_id)
            if found is not None:
                return str(found)
            cls, body = self._first_event(conn, stream_id)
            assert cls.data_subject is not None
        customer_id = body.get(cls.data_subject) or self._identify(conn, cls, body)
        self._streams.put(stream_id, customer_id)
        return str(customer_id)

    def _first_event(
        self, conn: Connection, stream_id: str
    ) -> tuple[type[EventPayload], Mapping[str, Any]]:
        row = conn.execute(_FIRST_EVENT, {"stream_id": stream_id}).first()
        cls = payload_class(row.event_type) if row is not None else None
        if row is None or cls is None or cls.data_subject is None:
            raise ValueError(f"stream {stream_id}: no event names the customer its data is about")
        return cls, upcast(row.event_type, row.schema_version, orjson.loads(row.payload))

    def _identify(self, conn: Connection, cls: type[EventPayload], body: Mapping[str, Any]) -> str:
        by_kind = {f.kind: get_path(body, f.path) for f in personal_fields(cls)}
        name, phone = by_kind.get("name"), by_kind.get("phone")
        if not isinstance(name, str) or not isinstance(phone, str) or is_sealed(phone):
            raise ValueError(f"{cls.event_type}: no clear name and phone to identify the customer")
        return self.customer_for(conn, name, phone)

    def _index_phones(
        self,
        conn: Connection,
        customer_id: str,
        fields: Sequence[PersonalField],
        clear: Mapping[Path, str],
    ) -> None:
        for f in fields:
            if f.kind != "phone" or f.path not in clear:
                continue
            digest = self.phone_digest(conn, clear[f.path], create=True)
            if (digest, customer_id) in self._phones:
                continue
            conn.execute(_NEW_PHONE, {"digest": digest, "customer_id": customer_id})
            note_committed(conn.info, lambda d=digest: self._phones.put((d, customer_id), True))

    # --- reading ------------------------------------------------------------------------------

    def open_tokens(self, conn: Connection, values: Iterable[object]) -> dict[str, str]:
        """Clear value (or ``[erased]`` / ``[unreadable]``) of every sealed token among
        ``values``; keys loaded in one query."""
        tokens = {v for v in values if isinstance(v, str) and is_sealed(v)}
        keys = self.ring.keys(conn, {c for t in tokens if (c := sealed_customer(t))})
        return {t: _open(keys, t) for t in tokens}

    def open_events(self, conn: Connection, events: Sequence[EventEnvelope]) -> list[EventEnvelope]:
        """The events with their personal fields in clear (a new envelope for each that had
        any; ``hash`` still covers the stored form)."""
        located = [(e, _fields_of(e.event_type)) for e in events]
        tokens = [get_path(e.payload, f.path) for e, fields in located for f in fields]
        opened = self.open_tokens(conn, tokens) if tokens else {}
        out: list[EventEnvelope] = []
        for event, fields in located:
            values = {
                f.path: opened[v]
                for f in fields
                if (v := get_path(event.payload, f.path)) in opened
            }
            if not values:
                out.append(event)
                continue
            payload = replace_paths(event.payload, values)
            out.append(EventEnvelope.trusted({**event.__dict__, "payload": payload}))
        return out

    # --- erasure ------------------------------------------------------------------------------

    def erase(self, conn: Connection, customer_id: str, at: datetime) -> None:
        """Destroy the customer's data key, lookup and phone indexes (crypto-shredding). On
        SQLite the freed bytes are overwritten too (``secure_delete``)."""
        secure = conn.dialect.name == "sqlite"
        if secure:
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        try:
            conn.execute(_ERASE_KEY, {"customer_id": customer_id, "at": at})
            conn.execute(_ERASE_PHONES, {"customer_id": customer_id})
        finally:
            if secure:
                conn.exec_driver_sql("PRAGMA secure_delete = OFF")
        # Every cached trace goes once the erasure commits (other processes: within their
        # key cache's lifetime, ``TICKETLINE_PRIVACY_KEY_CACHE_SECONDS``).
        note_committed(conn.info, lambda: self._forget(customer_id))

    def _forget(self, customer_id: str) -> None:
        self.ring.forget(customer_id)
        with self._phones.lock:
            for k in [k for k in self._phones if k[1] == customer_id]:
                del self._phones[k]


def _fields_of(event_type: str) -> tuple[PersonalField, ...]:
    try:
        return personal_fields(payload_class(event_type))
    except UnknownEventType:
        return ()


def _open(keys: Mapping[str, DataKey], token: str) -> str:
    key = keys.get(sealed_customer(token) or "")
    if key is None or key.state == "unreadable":
        return UNREADABLE
    if key.aead is None:
        return ERASED
    try:
        return key.open(token)
    except (InvalidTag, ValueError):
        PERSONAL_DATA_UNREADABLE.labels(what="value").inc()
        return UNREADABLE

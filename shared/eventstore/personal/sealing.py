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

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, cast

import orjson
from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, Connection, Update, or_, text, update

from shared.eventstore.db import ReadChangedMeanwhile, take_locks, utc_from_stored
from shared.eventstore.driver import Statement
from shared.eventstore.ledger import StreamAppend
from shared.eventstore.metrics import PERSONAL_DATA_UNREADABLE, note_committed
from shared.eventstore.personal.keys import DataKey, KeyRing, PersonalDataUnavailable
from shared.eventstore.tables import idempotency_keys
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import (
    DumpedPayload,
    EventEnvelope,
    EventPayload,
    PendingEvent,
    payload_model,
)
from shared.kernel.events.registry import UnknownEventType, payload_class, upcast
from shared.kernel.ids import uuid7_text
from shared.kernel.personal import (
    ERASED,
    UNREADABLE,
    Tree,
    get_path,
    identity_paths,
    is_sealed,
    map_personal,
    normalise_name,
    personal_fields,
    personal_tree,
    personal_values,
    sealed_customer,
)

# The customer of a lookup: by their first ticket's details, else by a correction's.
_LOOKUP = Statement(
    "SELECT customer_id, 0 FROM personal_data_keys WHERE lookup = :lookup "
    "UNION ALL SELECT customer_id, 1 FROM personal_data_aliases WHERE digest = :alias "
    "ORDER BY 2 LIMIT 1"
)
# A new customer's key in one statement: none when the lookup is taken, as a first
# ticket's details or a correction's (then _LOOKUP says whose it is).
_NEW_CUSTOMER = Statement(
    "INSERT INTO personal_data_keys (customer_id, lookup, wrapped_key, created_at, legal_hold) "
    "SELECT :customer_id, :lookup, :wrapped, :at, false WHERE NOT EXISTS "
    "(SELECT 1 FROM personal_data_aliases WHERE digest = :alias) "
    "ON CONFLICT (lookup) DO NOTHING"
)
_NEW_ALIAS = Statement(
    "INSERT INTO personal_data_aliases (digest, customer_id) VALUES (:digest, :customer_id) "
    "ON CONFLICT (digest) DO NOTHING"
)
_NEW_PHONE = Statement(
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
_ERASED = text(
    "SELECT 1 FROM personal_data_keys WHERE customer_id = :customer_id AND erased_at IS NOT NULL"
)
_ERASE_PHONES = text("DELETE FROM personal_data_phones WHERE customer_id = :customer_id")
_ERASE_ALIASES = text("DELETE FROM personal_data_aliases WHERE customer_id = :customer_id")

# The fingerprint of a request whose body held an erased customer's data: a retry with its
# key gets the stored answer (it holds no personal data), whatever body it carries.
FORGOTTEN_REQUEST = "erased"


def _forgotten_requests(tickets: Sequence[str]) -> Update:
    """The idempotency records of requests about ``tickets``: the one that opened each
    (its ``Location``) and those under a scope naming it (``intake:contact:<id>:…``)."""
    k = idempotency_keys.c
    about: list[ColumnElement[bool]] = [k.resource_location.in_([f"/tickets/{t}" for t in tickets])]
    about += [k.scope.contains(f":{t}:", autoescape=True) for t in tickets]
    return update(idempotency_keys).where(or_(*about)).values(request_hash=FORGOTTEN_REQUEST)


# Customers the ledger says were erased whose key, lookups or phone indexes are back (a
# backup from before the erasure restored): stream ids are ``customer-<id>`` (9 + 36).
_ERASURES_UNDONE = text(
    "SELECT substr(e.stream_id, 10), e.recorded_at, e.position, e.event_id, e.stream_version "
    "FROM events e "
    "WHERE e.stream_type = 'customer' AND e.event_type = 'CustomerDataErased' AND ("
    "EXISTS (SELECT 1 FROM personal_data_keys k WHERE k.customer_id = substr(e.stream_id, 10) "
    "AND (k.wrapped_key IS NOT NULL OR k.lookup IS NOT NULL OR k.erased_at IS NULL)) "
    "OR EXISTS (SELECT 1 FROM personal_data_phones p WHERE p.customer_id = substr(e.stream_id, 10)) "
    "OR EXISTS (SELECT 1 FROM personal_data_aliases a WHERE a.customer_id = substr(e.stream_id, 10))"
    ") ORDER BY e.position"
)


class ErasureUndone(NamedTuple):
    customer_id: str
    at: datetime
    # The CustomerDataErased event that says so.
    position: int
    event_id: str
    stream_version: int


def erasures_undone(conn: Connection) -> list[ErasureUndone]:
    """Each customer the ledger records as erased whose personal-data traces are in the key
    tables again — a backup from before the erasure restored; every start erases them
    again (``PersonalData.redo_erasures``)."""
    return [
        ErasureUndone(str(c), utc_from_stored(at), int(p), str(e), int(v))
        for c, at, p, e, v in conn.execute(_ERASURES_UNDONE)
    ]


_LEGAL_HOLD = text(
    "UPDATE personal_data_keys SET legal_hold = :hold WHERE customer_id = :customer_id"
)


class _Bounded(dict[Any, Any]):
    """A memo that starts afresh past its size (entries are cheap to find again)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        if len(self) >= self.size:
            self.clear()
        self[key] = value


class PersonalData:
    """The personal-data store of one platform: its key ring and who the customers are."""

    def __init__(
        self, ring: KeyRing, clock: Clock | None = None, *, memo_size: int = 200_000
    ) -> None:
        """``memo_size``: entries per memo (100–200 bytes an entry)."""
        self.ring = ring
        self.clock = clock or SystemClock()
        self._streams = _Bounded(memo_size)  # stream id → customer id
        self._lookups = _Bounded(memo_size)  # lookup digest → (customer id, when found)
        self._phones = _Bounded(memo_size)  # (phone digest, customer id) → True (committed)

    # --- who the customer is ------------------------------------------------------------------

    def phone_digest(self, conn: Connection, phone: str, *, create: bool = False) -> str | None:
        """The blind index of a phone number (digits as stored); None while no customer
        exists at all."""
        return self.ring.digest(conn, "phone", phone, create=create)

    def customer_for(self, conn: Connection, name: str, phone: str) -> str:
        """The customer with this name and phone, created (with a data key) when new.

        Remembered for the key cache's lifetime once the transaction commits: a customer
        erased by another process is matched here for at most that long (the same window as
        its key: docs/personal-data.md); the erasing process forgets it at once."""
        lookup = self._lookup(conn, name, phone, create=True)
        assert lookup is not None
        found = self._lookups.get(lookup)
        if found is not None and self.ring.clock() - found[1] <= self.ring.cache_seconds:
            return str(found[0])
        customer_id = uuid7_text()
        key, wrapped = self.ring.new_key(conn, customer_id)
        for _ in range(3):
            if _NEW_CUSTOMER.execute(conn, customer_id, lookup, wrapped, self.clock.now(), lookup):
                self.ring.remember(key)
                break
            # A returning customer (or one created concurrently): theirs — unless an erasure
            # removed what blocked the insert meanwhile (PostgreSQL, read committed): again.
            found = _LOOKUP.scalar(conn, lookup, lookup)
            if found is not None:
                customer_id = str(found)
                break
        else:
            raise ReadChangedMeanwhile("the customer's lookup kept changing")
        at = self.ring.clock()
        note_committed(conn.info, lambda: self._lookups.put(lookup, (customer_id, at)))
        return customer_id

    def find_customer(self, conn: Connection, name: str, phone: str) -> str | None:
        """The customer with this name and phone (digits as stored), if there is one."""
        lookup = self._lookup(conn, name, phone)
        if lookup is None:
            return None
        found = _LOOKUP.scalar(conn, lookup, lookup)
        return None if found is None else str(found)

    def _lookup(
        self, conn: Connection, name: str, phone: str, *, create: bool = False
    ) -> str | None:
        return self.ring.digest(conn, "customer", f"{normalise_name(name)}\0{phone}", create=create)

    def request_digest(self, conn: Connection, text: str) -> str:
        """A request body's fingerprint (idempotency records), keyed like the blind
        indexes: without the secret it cannot be tested against guessed values."""
        digest = self.ring.digest(conn, "request", text, create=True)
        assert digest is not None  # ``create``: the secret exists once this returns
        return digest

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
            for e in events:
                if personal_fields(payload_model(e.payload)):
                    break
            else:
                out.append(append)
                continue
            stored = [
                PendingEvent(self._stored(conn, append.stream_id, e.payload), e.occurred_at)
                for e in events
            ]
            out.append(StreamAppend(append.stream_id, stored, append.head, append.region))
        return out

    def _stored(self, conn: Connection, stream_id: str, payload: EventPayload) -> EventPayload:
        body = payload.model_dump(mode="json")
        model = payload_model(payload)
        if personal_fields(model):
            body = self.seal_body(conn, stream_id, payload, body)
        # The stored form: what the ledger's append asks of a payload, nothing more.
        return cast(EventPayload, DumpedPayload(model, body))

    def seal_body(
        self, conn: Connection, stream_id: str, payload: EventPayload, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``body`` (the payload as JSON types) with its personal fields sealed by the data
        subject's key — or ``[erased]`` once that customer is erased."""
        model = payload_model(payload)
        tree = personal_tree(model)
        if not tree:
            return body
        if model.data_subject is None and next(personal_values(body, tree), None) is None:
            # Nothing to seal (a follow-up without a comment): no key needed, so a
            # customer's unreadable key does not hold up work that records no personal data.
            return body
        customer_id = self._subject(conn, stream_id, model, body)
        key = self.ring.key(conn, customer_id)
        if key.state == "unreadable":
            raise PersonalDataUnavailable(
                "personal_data_key_unreadable",
                "this customer's data key cannot be read; restore it from a backup",
            )
        sealed, phones = _sealed(body, tree, key)
        if model.data_subject:
            sealed[model.data_subject] = customer_id
        elif key.secret is not None and (contact := _contact(model, body)):
            # A correction: the customer is found by their new details as well.
            _NEW_ALIAS.execute(conn, self._lookup(conn, *contact, create=True), customer_id)
        for phone in phones:
            self._index_phone(conn, customer_id, phone)
        return sealed

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
        contact = _contact(cls, body)
        if contact is None:
            raise ValueError(f"{cls.event_type}: no clear name and phone to identify the customer")
        return self.customer_for(conn, *contact)

    def _index_phone(self, conn: Connection, customer_id: str, phone: str) -> None:
        digest = self.phone_digest(conn, phone, create=True)
        if (digest, customer_id) in self._phones:
            return
        _NEW_PHONE.execute(conn, digest, customer_id)
        note_committed(conn.info, lambda: self._phones.put((digest, customer_id), True))

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
        located = [(e, _tree_of(e.event_type)) for e in events]
        for event in events:  # later appends to these streams seal for their customer
            field = _subject_field(event.event_type)
            if field is not None and (customer_id := event.payload.get(field)):
                self._streams.put(event.stream_id, customer_id)
        tokens = [v for e, tree in located if tree for _, v in personal_values(e.payload, tree)]
        opened = self.open_tokens(conn, tokens) if tokens else {}
        if not opened:
            return list(events)
        out: list[EventEnvelope] = []
        for event, tree in located:
            if not tree:
                out.append(event)
                continue
            payload = map_personal(event.payload, tree, lambda _kind, v: opened.get(v, v))
            out.append(EventEnvelope.trusted({**event.__dict__, "payload": payload}))
        return out

    # --- erasure ------------------------------------------------------------------------------

    def hold_customer(self, conn: Connection, customer_id: str) -> bool:
        """Lock the customer until commit — an erasure does too, so of an erasure and a
        command that would need their data again (a complaint reopening their ticket) one
        commits first and the other sees it —; True when they are erased."""
        take_locks(conn, [f"customer:{customer_id}"])
        return conn.execute(_ERASED, {"customer_id": customer_id}).first() is not None

    def erase(
        self, conn: Connection, customer_id: str, at: datetime, tickets: Sequence[str] = ()
    ) -> None:
        """Destroy the customer's data key, lookups and phone indexes (crypto-shredding), and
        the fingerprints of the requests recorded for ``tickets`` (their bodies held the
        customer's data: a retry of one could test a guess). On SQLite the freed bytes are
        overwritten too (``secure_delete``)."""
        secure = conn.dialect.name == "sqlite"
        if secure:
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        try:
            conn.execute(_ERASE_KEY, {"customer_id": customer_id, "at": at})
            conn.execute(_ERASE_PHONES, {"customer_id": customer_id})
            conn.execute(_ERASE_ALIASES, {"customer_id": customer_id})
            for start in range(0, len(tickets), 100):
                conn.execute(_forgotten_requests(tickets[start : start + 100]))
        finally:
            if secure:
                conn.exec_driver_sql("PRAGMA secure_delete = OFF")
        # Every cached trace goes once the erasure commits (other processes: within their
        # key cache's lifetime, ``TICKETLINE_PRIVACY_KEY_CACHE_SECONDS``).
        note_committed(conn.info, lambda: self._forget(customer_id))

    def redo_erasures(self, conn: Connection) -> list[str]:
        """Erase again every customer the ledger records as erased whose traces came
        back (``erasures_undone``); returns them."""
        undone = erasures_undone(conn)
        for erasure in undone:
            self.erase(conn, erasure.customer_id, erasure.at)
        return [erasure.customer_id for erasure in undone]

    def _forget(self, customer_id: str) -> None:
        self.ring.forget(customer_id)
        for k in [k for k in list(self._phones) if k[1] == customer_id]:
            self._phones.pop(k, None)
        for k in [k for k, v in list(self._lookups.items()) if v[0] == customer_id]:
            self._lookups.pop(k, None)


def _sealed(body: dict[str, Any], tree: Tree, key: DataKey) -> tuple[dict[str, Any], list[str]]:
    """``body`` with each personal text value sealed by ``key`` (``[erased]`` without one;
    copy on write), and the clear phone numbers met (for their blind index). The hot path
    of every append with personal data: one walk of the payload's personal tree."""
    seal = key.sealer()
    phones: list[str] = []
    if seal is None:
        return map_personal(body, tree, lambda _kind, _value: ERASED), phones

    def sealed(kind: str, value: str) -> str:
        if kind == "phone":
            phones.append(value)
        return seal(value)

    return map_personal(body, tree, sealed), phones


def _contact(cls: type[EventPayload], body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The clear name and phone ``body`` gives the customer (who they are), if it does."""
    paths = identity_paths(cls)
    name, phone = (get_path(body, p) for p in paths) if paths else (None, None)
    if not isinstance(name, str) or not isinstance(phone, str) or is_sealed(phone):
        return None
    return name, phone


@cache
def _subject_field(event_type: str) -> str | None:
    try:
        return payload_class(event_type).data_subject
    except UnknownEventType:
        return None


def _tree_of(event_type: str) -> Tree:
    try:
        return personal_tree(payload_class(event_type))
    except UnknownEventType:
        return {}


def _open(keys: Mapping[str, DataKey], token: str) -> str:
    key = keys.get(sealed_customer(token) or "")
    if key is None or key.state == "unreadable":
        return UNREADABLE
    if key.secret is None:
        return ERASED
    try:
        return key.open(token)
    except (InvalidTag, ValueError):
        PERSONAL_DATA_UNREADABLE.labels(what="value").inc()
        return UNREADABLE

"""Idempotent command endpoints: the same ``Idempotency-Key`` returns the first result.

The key's record is written in the command's own transaction. Two concurrent requests
with one key both run; the second fails on the key's primary key and rolls back all it
wrote, then returns the first's stored response. So a key yields exactly one outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, delete, select, tuple_
from sqlalchemy.exc import IntegrityError

from shared.eventstore.db import Database
from shared.eventstore.driver import Statement
from shared.eventstore.personal.sealing import FORGOTTEN_REQUEST
from shared.eventstore.tables import idempotency_keys
from shared.http.headers import etag
from shared.http.problems import ProblemError
from shared.kernel.events.envelope import canonical_json

_TABLE = idempotency_keys.name


@dataclass(frozen=True)
class CommandResponse:
    status_code: int
    body: dict[str, Any]
    location: str | None = None
    replayed: bool = False


Command = Callable[[Connection], CommandResponse]


# A request's fingerprint is a digest keyed with a secret of the deployment
# (``PersonalData.request_digest``): bodies hold personal data, and an unkeyed hash of
# guessable data gives it back to whoever reads the table (docs/personal-data.md).
KeyedDigest = Callable[[Connection, str], str]
_KEYED = "k1."


@dataclass(frozen=True)
class _Request:
    body: Any
    text: str  # the body as JSON with sorted keys
    keyed: KeyedDigest

    @classmethod
    def of(cls, body: Any, keyed: KeyedDigest) -> _Request:
        return cls(body, orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode(), keyed)

    def fingerprint(self, conn: Connection) -> str:
        return _KEYED + self.keyed(conn, self.text)

    def matches(self, conn: Connection, stored: str) -> bool:
        if stored.startswith(_KEYED):
            return stored == self.fingerprint(conn)
        if stored == FORGOTTEN_REQUEST:  # erased with its customer: nothing to compare
            return True
        # Records from before keyed fingerprints: SHA-256 of the body as orjson, or (older
        # still) as ``canonical_json`` wrote it — the two differ for some floats.
        return stored in (
            hashlib.sha256(self.text.encode()).hexdigest(),
            hashlib.sha256(canonical_json(self.body).encode()).hexdigest(),
        )


class JSONBody(JSONResponse):
    """``JSONResponse`` rendered by orjson: the same compact UTF-8 JSON, faster."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# Every command runs these two: plain SQL on the driver (SQLAlchemy's per-statement work
# was a tenth of a small command's cost).
# The record under the scope, else under the scope it had before (one statement).
_STORED = Statement(
    f"SELECT request_hash, status_code, response_body, resource_location FROM {_TABLE} "
    "WHERE key = :key AND scope IN (:scope, :earlier) "
    "ORDER BY CASE WHEN scope = :scope_first THEN 0 ELSE 1 END LIMIT 1"
)
_RECORD = Statement(
    f"INSERT INTO {_TABLE} (scope, key, request_hash, status_code, response_body, "
    "resource_location, created_at) VALUES (:scope, :key, :request_hash, :status_code, "
    ":response_body, :resource_location, :created_at)"
)


@dataclass(frozen=True)
class _Record:
    request_hash: str
    status_code: int
    response_body: str
    resource_location: str | None


def _stored(conn: Connection, scope: str, key: str, earlier: str | None = None) -> _Record | None:
    row = _STORED.first(conn, key, scope, earlier or scope, scope)
    return None if row is None else _Record(*row)


def _stored_matching(
    conn: Connection, scope: str, key: str, earlier: str | None, request: _Request
) -> tuple[_Record, bool] | None:
    """The stored record, and whether it was made for this request."""
    row = _stored(conn, scope, key, earlier)
    return None if row is None else (row, request.matches(conn, row.request_hash))


async def has_stored_answer(
    db: Database, scope: str, key: str, earlier_scope: str | None = None
) -> bool:
    """Whether ``key`` has an answer under ``scope`` (a read: no write turn taken)."""
    return await db.read(lambda c: _stored(c, scope, key, earlier_scope)) is not None


def _replay(row: _Record, same_request: bool) -> CommandResponse:
    if not same_request:
        raise ProblemError(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused with a different request",
            "This Idempotency-Key was first used with a different body; use a new key.",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return CommandResponse(
        row.status_code, orjson.loads(row.response_body), row.resource_location, replayed=True
    )


def _once(
    conn: Connection,
    scopes: tuple[str, str | None],
    key: str,
    request: _Request,
    command: Command,
    now: datetime,
) -> CommandResponse:
    """The unit of work of an idempotent command: the stored answer, or the command's
    answer stored with it. ``scopes``: the scope, and the one an older version stored such
    keys under (still answered)."""
    scope = scopes[0]
    row = _stored(conn, scope, key, scopes[1])
    if row is not None:
        return _replay(row, request.matches(conn, row.request_hash))
    response = command(conn)
    _RECORD.execute(
        conn,
        scope,
        key,
        request.fingerprint(conn),
        response.status_code,
        # In the answer's own key order: a replay is the same bytes.
        orjson.dumps(response.body).decode(),
        response.location,
        now,
    )
    return response


async def run_idempotent(
    db: Database,
    *,
    scope: str,
    key: str | None,
    request_body: Any,
    keyed: KeyedDigest,
    command: Command,
    now: datetime,
    earlier_scope: str | None = None,
) -> CommandResponse:
    """Run ``command`` in one unit of work, recording its response under ``key`` (a
    record under ``earlier_scope``, the scope keys had before, is answered too) with the
    request's fingerprint, a digest of ``request_body`` by ``keyed``."""
    if key is None:
        return await db.write(command)
    if not 1 <= len(key) <= 200:
        raise ProblemError(
            422,
            "validation-error",
            "The request is not valid",
            "Idempotency-Key must be 1 to 200 characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 200 characters"}],
        )
    request = _Request.of(request_body, keyed)
    scopes = (scope, earlier_scope)
    for _attempt in range(3):
        try:
            return await db.write(lambda c: _once(c, scopes, key, request, command, now))
        except IntegrityError as exc:
            # A concurrent request with the same key committed first: all this one wrote
            # is rolled back; answer with the stored outcome.
            found = await db.read(lambda c: _stored_matching(c, scope, key, earlier_scope, request))
            if found is not None:
                return _replay(*found)
            if _TABLE not in str(exc.orig):
                raise  # another constraint than the key's: no retry settles it
    raise ProblemError(
        409,
        "idempotency-conflict",
        "Could not settle the Idempotency-Key; retry",
        rule="idempotency_conflict",
    )


def forget_answers_before(conn: Connection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` records made before ``before`` (oldest first); how many.
    A retry with a forgotten key is a new command (README: the keeping period)."""
    table = idempotency_keys
    oldest = (
        select(table.c.scope, table.c.key)
        .where(table.c.created_at < before)
        .order_by(table.c.created_at)
        .limit(limit)
    )
    found = conn.execute(delete(table).where(tuple_(table.c.scope, table.c.key).in_(oldest)))
    return found.rowcount


def to_response(response: CommandResponse) -> JSONResponse:
    """The command's JSON answer: ``ETag`` when the body has a version, ``Location`` when
    it created what it names (a 201, as the OpenAPI says), ``Idempotent-Replayed`` when it
    is the stored answer to an earlier request."""
    headers: dict[str, str] = {}
    if "version" in response.body:
        headers["ETag"] = etag(response.body["version"])
    if response.location and response.status_code == 201:
        headers["Location"] = response.location
    if response.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONBody(response.body, status_code=response.status_code, headers=headers)

"""Keyset pages of a read model: the cursor is the last row's (time, id), so rows written
while a client pages never shift the pages it has not read yet."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from shared.kernel.errors import InvalidCommand

# Why a cursor is refused (422 naming ``cursor``): whatever the reason, it is not one of ours.
NOT_ISSUED = "not a cursor this service issued"


def encode_cursor(at: datetime, ident: str) -> str:
    raw = f"{at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, ident = raw.split("|", 1)
        return datetime.fromisoformat(at), ident
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCommand("cursor", NOT_ISSUED) from None


def after_cursor(cursor: str, at: Any, ident: Any, *, descending: bool) -> ColumnElement[bool]:
    """The rows after ``cursor`` in the order (``at``, ``ident``), both descending or both
    ascending (one index walk either way)."""
    value, last = decode_cursor(cursor)
    if descending:
        return or_(at < value, and_(at == value, ident < last))
    return or_(at > value, and_(at == value, ident > last))


def next_page(rows: list[Any], limit: int, at: str, ident: str) -> tuple[list[Any], str | None]:
    """The page (``limit`` of ``rows``, read with ``limit + 1``) and the cursor of the next
    one, None when this is the last."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    last = page[-1]._mapping
    return page, encode_cursor(last[at], last[ident])

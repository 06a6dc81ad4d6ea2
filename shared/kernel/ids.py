"""Identifiers that sort by creation time (UUID version 7, RFC 9562).

Event and ticket ids are indexed: ids that grow with time are appended at the end of
their index instead of landing on a random page, which keeps appends cheap."""

from __future__ import annotations

import os
import time
from uuid import UUID

_MASK_62 = (1 << 62) - 1


def _uuid7_int() -> int:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & _MASK_62)
    )


def uuid7() -> UUID:
    """48 bits of Unix milliseconds, version 7, 74 random bits."""
    return UUID(int=_uuid7_int())


def uuid7_text() -> str:
    """``str(uuid7())`` without the UUID object: an event id per append."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

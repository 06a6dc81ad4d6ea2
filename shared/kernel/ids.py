"""Identifiers that sort by creation time (UUID version 7, RFC 9562).

Event and ticket ids are indexed: ids that grow with time are appended at the end of
their index instead of landing on a random page, which keeps appends cheap."""

from __future__ import annotations

import os
import time
from uuid import UUID

_MASK_62 = (1 << 62) - 1


def uuid7() -> UUID:
    """48 bits of Unix milliseconds, version 7, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & _MASK_62)
    )
    return UUID(int=value)

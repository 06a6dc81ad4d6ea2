"""Identifiers that sort by creation time (UUID version 7, RFC 9562).

Event and ticket ids are indexed: ids that grow with time are appended at the end of
their index instead of landing on a random page, which keeps appends cheap."""

from __future__ import annotations

import os
import time

_MASK_62 = (1 << 62) - 1


def uuid7_text() -> str:
    """A version-7 UUID as text: 48 bits of Unix milliseconds, version 7, 74 random bits
    (made as text directly: an event id per append)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & _MASK_62)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

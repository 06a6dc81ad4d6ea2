"""Time-ordered identifiers (shared/kernel/ids.py)."""

from __future__ import annotations

import time
import uuid

from shared.kernel.ids import uuid7_text


def test_uuid7_text_is_the_text_of_a_version_7_uuid() -> None:
    for _ in range(200):
        text = uuid7_text()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_uuid7_ids_sort_by_creation_time() -> None:
    first = uuid7_text()
    time.sleep(0.002)  # a later millisecond
    middle = uuid7_text()
    time.sleep(0.002)
    last = uuid7_text()
    assert first < middle < last

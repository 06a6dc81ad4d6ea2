"""Process settings for bulk work (a replay, an import): what a request path never needs."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def bulk_gc(young: int = 10_000) -> Iterator[None]:
    """Fewer garbage collections while a process does bulk work: an import or a replay
    allocates millions of short-lived objects and holds few, so the default
    young-generation threshold (700) mostly re-scans what is already there. Not much
    higher: a young generation of 50,000 made the import's memory grow with the file.
    Restored after."""
    before = gc.get_threshold()
    # The young generations only: a full collection costs 40-60 ms in a process that has
    # seeded a ledger (3 % of a 100k-event rebuild). Old garbage frozen below is freed by
    # the first full collection after the thaw.
    gc.collect(1)
    gc.freeze()  # what is alive now (modules, the platform) is not scanned again
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()

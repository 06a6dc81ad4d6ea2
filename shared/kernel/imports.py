"""Events recorded by an import of another system's history (``ticketline import``).

An imported event is an ordinary event of its stream, decided by the owning service's
decide function, hash-chained like any other. What marks it as imported is its envelope:

- ``actor``: the import's operator (who ran the import, as which role);
- ``correlation_id`` **and** ``causation_id``: both the import batch id (one per file
  import; an interrupted import resumes under the same id). No other writer sets both to
  one value: a command has no causation id, a reaction is caused by an event (its id) in
  that event's correlation, and an event id never exists before its own append;
- ``occurred_at``: when the fact happened in the old system; ``recorded_at``: the import.

The batch id names the import run (``import_runs``: the file, its kind, the operator, the
counts and the last committed line), so the envelope needs no field of its own and the
hash of every event recorded before imports existed is unchanged.
"""

from __future__ import annotations

import uuid
from typing import Protocol

# Ids derived from an old system's natural keys (ticket numbers) live in this namespace, so
# re-importing the same row names the same stream.
IMPORT_NAMESPACE = uuid.UUID("0b9d7c1e-4a52-5f3e-8d17-7c2f6a1b9e30")


class _Enveloped(Protocol):
    @property
    def correlation_id(self) -> str: ...

    @property
    def causation_id(self) -> str | None: ...


def import_batch_of(event: _Enveloped) -> str | None:
    """The import batch that recorded ``event``, or None when it was recorded live."""
    cause = event.causation_id
    return str(cause) if cause is not None and str(cause) == str(event.correlation_id) else None


def is_imported(event: _Enveloped) -> bool:
    return import_batch_of(event) is not None


def imported_id(kind: str, natural_key: str) -> str:
    """A stable id for an imported record without one (the same key, the same id)."""
    return str(uuid.uuid5(IMPORT_NAMESPACE, f"{kind}\x1f{natural_key}"))

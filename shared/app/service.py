"""How a service declares itself: one ``SERVICE`` value in ``services/<name>/service.py``.

The registry reads these declarations, so a new service touches its own folder plus the
one line that names it in ``shared/app/registry.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.eventstore.projection import Projection

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.app.importing.kinds import Kind
    from shared.app.importing.tickets import HistoryStep
    from shared.app.platform import Platform


@dataclass(frozen=True)
class ServiceModule:
    name: str
    # The FastAPI application (given a platform in tests and the embedded runner).
    create_app: Callable[[Platform | None], FastAPI]
    # Read models rebuilt by replay; those in ``inline`` are also applied in the
    # service's command transactions, by stream type, so callers read their own writes.
    projections: Sequence[Projection] = ()
    inline: Mapping[str, Sequence[Projection]] = field(default_factory=dict)
    # Handlers that react to events by appending events (process managers): they run in
    # the projector like projections, but a replay never runs them.
    reactors: Callable[[Platform], Sequence[Projection]] | None = None
    # Periodic work kept running by `ticketline run` / `ticketline jobs`; must be safe in
    # several processes (take a Lease).
    jobs: Callable[[Platform, asyncio.Event], Coroutine[Any, Any, None]] | None = None
    # The kinds of records it imports from the system Ticketline replaces (`ticketline
    # import`, `POST /imports/<kind>` on the service), and its steps of an imported
    # ticket's history (shared/app/importing/tickets.py), in lifecycle order.
    imports: Sequence[Kind] = ()
    history: Sequence[HistoryStep] = ()

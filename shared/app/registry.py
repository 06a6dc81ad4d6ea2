"""What the platform is made of: the services (each declared in its ``service.py``) and
the read models every service shares. Adding a service: its folder, and its name here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from importlib import import_module
from typing import Any

from fastapi import FastAPI

from shared.app.config import Settings
from shared.app.platform import Platform
from shared.app.service import ServiceModule
from shared.eventstore.projection import Projection
from shared.readmodels.catalog import PROJECTIONS as SHARED_PROJECTIONS

# The APIs: each owns events, read models, jobs and an OpenAPI document.
SERVICES: tuple[str, ...] = ("intake", "dispatch", "parts", "feedback")
# The read-only operations console (HTML for people, no API of its own).
CONSOLE = "console"
# Every HTTP process: what `ticketline run` starts and `ticketline serve` accepts.
SERVERS: tuple[str, ...] = (*SERVICES, CONSOLE)


def service(name: str) -> ServiceModule:
    """The declaration of one service (``SERVICE`` in ``services/<name>/service.py``)."""
    if name not in SERVERS:
        raise KeyError(f"unknown service {name!r}; choose from {', '.join(SERVERS)}")
    declared: ServiceModule = import_module(f"services.{name}.service").SERVICE
    return declared


def app_factory(name: str) -> Callable[[Platform | None], FastAPI]:
    return service(name).create_app


def service_port(settings: Settings, service: str) -> int:
    return int(getattr(settings, f"{service}_port"))


def all_jobs() -> dict[str, Callable[[Platform, asyncio.Event], Coroutine[Any, Any, None]]]:
    """Each service's periodic jobs, and the platform's own (signed ledger checkpoints,
    idempotency expiry)."""
    from shared.app.checkpoints import run_job as checkpoints
    from shared.app.idempotency_expiry import run_job as idempotency_expiry

    found = {f"services.{name}.jobs": job for name in SERVICES if (job := service(name).jobs)}
    found["shared.app.checkpoints"] = checkpoints
    found["shared.app.idempotency_expiry"] = idempotency_expiry
    return found


def all_reactors(platform: Platform) -> dict[str, Projection]:
    found: dict[str, Projection] = {}
    for name in SERVICES:
        if reactors := service(name).reactors:
            found.update((r.name, r) for r in reactors(platform))
    return found


def inline_projections(name: str) -> dict[str, tuple[Projection, ...]]:
    """The read models service ``name`` keeps in its commands' transactions."""
    return {k: tuple(v) for k, v in service(name).inline.items()}


def all_projections() -> dict[str, Projection]:
    """Every read model (rebuilt by replay): the shared ones, then each service's."""
    found: dict[str, Projection] = {p.name: p for p in SHARED_PROJECTIONS}
    for name in SERVICES:
        found.update((p.name, p) for p in service(name).projections)
    return found


def all_handlers(platform: Platform) -> dict[str, Projection]:
    """Everything a projector keeps up to date: the projections and the reactors."""
    return {**all_projections(), **all_reactors(platform)}

"""What the platform is made of: the services and the asynchronous projections."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from fastapi import FastAPI

from shared.app.config import Settings
from shared.app.platform import Platform
from shared.eventstore.projection import Projection

# The APIs: each owns events, read models, jobs and an OpenAPI document.
SERVICES: tuple[str, ...] = ("intake", "dispatch", "parts", "feedback")
# The read-only operations console (HTML for people, no API of its own).
CONSOLE = "console"
# Every HTTP process: what `ticketline run` starts and `ticketline serve` accepts.
SERVERS: tuple[str, ...] = (*SERVICES, CONSOLE)


def _service_modules(leaf: str) -> tuple[str, ...]:
    """``services.<name>.<leaf>`` for every service that has such a module."""
    return tuple(
        f"services.{name}.{leaf}" for name in SERVICES if find_spec(f"services.{name}.{leaf}")
    )


# Modules exposing ``PROJECTIONS: tuple[Projection, ...]``: read models, rebuilt by replay.
PROJECTION_MODULES: tuple[str, ...] = (
    "shared.readmodels.catalog",
    *_service_modules("projections"),
)

# Modules exposing ``def reactors(platform: Platform) -> list[Projection]``: handlers that
# react to events by appending events (process managers). They run like projections (same
# runner, checkpoint and per-stream dedupe in the transaction of what they append), but a
# replay never runs them: their output is already in the ledger.
REACTOR_MODULES: tuple[str, ...] = _service_modules("reactors")

# Modules exposing ``async def run_job(platform: Platform, stop: asyncio.Event) -> None``:
# periodic work (SLA clocks, overdue checks) that `ticketline run` and `ticketline jobs`
# keep running. Each must be safe to run in several processes (use a Lease).
JOB_MODULES: tuple[str, ...] = _service_modules("jobs")


def app_factory(service: str) -> Callable[[Platform | None], FastAPI]:
    if service not in SERVERS:
        raise KeyError(f"unknown service {service!r}; choose from {', '.join(SERVERS)}")
    return import_module(f"services.{service}.app").create_app  # type: ignore[no-any-return]


def service_port(settings: Settings, service: str) -> int:
    return int(getattr(settings, f"{service}_port"))


def all_jobs() -> dict[str, Callable[..., Any]]:
    return {module: import_module(module).run_job for module in JOB_MODULES}


def all_reactors(platform: Platform) -> dict[str, Projection]:
    found: dict[str, Projection] = {}
    for module in REACTOR_MODULES:
        for reactor in import_module(module).reactors(platform):
            found[reactor.name] = reactor
    return found


def all_projections() -> dict[str, Projection]:
    found: dict[str, Projection] = {}
    for module in PROJECTION_MODULES:
        for projection in import_module(module).PROJECTIONS:
            found[projection.name] = projection
    return found


def all_handlers(platform: Platform) -> dict[str, Projection]:
    """Everything a projector keeps up to date: the projections and the reactors."""
    return {**all_projections(), **all_reactors(platform)}

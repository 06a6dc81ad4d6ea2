"""What the platform is made of: the services and the asynchronous projections."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from fastapi import FastAPI

from shared.config import Settings
from shared.platform import Platform
from shared.projections.base import Projection

SERVICES: tuple[str, ...] = ("intake", "dispatch", "parts", "feedback")

# Modules exposing PROJECTIONS: tuple[Projection, ...]; each service adds its own here.
PROJECTION_MODULES: tuple[str, ...] = ("shared.projections.catalog",)


# Modules exposing ``async def run_job(platform: Platform, stop: asyncio.Event) -> None``:
# periodic work (SLA clocks, overdue checks) that `ticketline run` and `ticketline jobs`
# keep running. Each must be safe to run in several processes (use a Lease).
JOB_MODULES: tuple[str, ...] = ()


def app_factory(service: str) -> Callable[[Platform | None], FastAPI]:
    if service not in SERVICES:
        raise KeyError(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    return import_module(f"services.{service}.app").create_app  # type: ignore[no-any-return]


def service_port(settings: Settings, service: str) -> int:
    return int(getattr(settings, f"{service}_port"))


def all_jobs() -> dict[str, Callable[..., Any]]:
    return {module: import_module(module).run_job for module in JOB_MODULES}


def all_projections() -> dict[str, Projection]:
    found: dict[str, Projection] = {}
    for module in PROJECTION_MODULES:
        for projection in import_module(module).PROJECTIONS:
            found[projection.name] = projection
    return found

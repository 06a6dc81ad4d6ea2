"""The parts service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from shared.http.app import create_service_app
from shared.platform import Platform


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="parts",
        title="Ticketline parts",
        description="(routes arrive with the parts issue)",
        routers=[],
        platform=platform,
    )

"""The dispatch service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.routes import network_router, tickets_router
from shared.app.platform import Platform
from shared.http.app import create_service_app


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="dispatch",
        title="Ticketline dispatch",
        description="The service network (headquarters, regional centers, service points, "
        "technicians), assignment of tickets with a stated reason, the technician's on-site "
        "visit and repair, and the technicians' work lists. SLA breaches are recorded by the "
        "dispatch SLA clock (`ticketline jobs`). Errors are RFC 9457 problem details.",
        routers=[network_router, tickets_router],
        platform=platform,
        openapi_tags=[
            {"name": "network", "description": "Service network and technicians"},
            {"name": "dispatch", "description": "Assignment, visit, repair, work lists"},
        ],
    )

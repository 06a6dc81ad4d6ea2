"""The dispatch service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.routes import network_router, tickets_router
from services.dispatch.sla_routes import router as sla_router
from shared.app.platform import Platform
from shared.http.app import create_service_app


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="dispatch",
        title="Ticketline dispatch",
        description="The service network (headquarters, regional centers, service points, "
        "technicians), assignment of tickets with a stated reason, the technician's on-site "
        "visit and repair, and the technicians' work lists. The SLA clock runs in business time "
        "on versioned calendars and policies, pauses on request, and records warnings, "
        "breaches and escalations (`ticketline jobs`; docs/sla.md). Errors are RFC 9457 "
        "problem details.",
        routers=[network_router, tickets_router, sla_router],
        platform=platform,
        openapi_tags=[
            {"name": "network", "description": "Service network and technicians"},
            {"name": "dispatch", "description": "Assignment, visit, repair, work lists"},
            {"name": "sla", "description": "Calendars, SLA policies, pauses, timeline, what-if"},
        ],
    )

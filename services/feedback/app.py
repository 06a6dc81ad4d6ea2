"""The feedback service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from services.feedback.routes import router
from shared.app.platform import Platform
from shared.http.app import create_service_app


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="feedback",
        title="Ticketline feedback",
        description="Customer relations' API: record the return visit after a repair "
        "(closes or reopens the ticket), file complaints; headquarters' views: the "
        "closed-loop compliance checklist per ticket and its rates per region, service "
        "point, technician and month (JSON or CSV), monthly scorecards with every deduction "
        "traced to its events, and the weekly quality report. Errors are RFC 9457 problem "
        "details.",
        routers=[router],
        platform=platform,
        openapi_tags=[
            {"name": "follow-ups", "description": "Return visits and complaints"},
            {"name": "compliance", "description": "The closed-loop compliance view"},
            {"name": "scorecards", "description": "Service-point scores and staff KPIs"},
            {"name": "quality", "description": "Quality alerts and the weekly report"},
        ],
    )

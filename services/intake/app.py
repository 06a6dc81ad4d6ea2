"""The intake service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.customers import router as customers_router
from services.intake.routes import router
from shared.app.platform import Platform
from shared.http.admin import router as admin_router
from shared.http.app import create_service_app
from shared.http.audit import router as audit_router
from shared.http.streams import router as streams_router


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="intake",
        title="Ticketline intake",
        description="The call center's API: open tickets (one intake, followed to the end), "
        "record the diagnosis, correct contact details, find and read tickets and their "
        "audit trail; the privacy officer's subject access, erasure and legal holds. Errors "
        "are RFC 9457 problem details.",
        routers=[router, customers_router, streams_router, audit_router, admin_router],
        platform=platform,
        openapi_tags=[
            {"name": "tickets", "description": "Ticket intake and diagnosis"},
            {"name": "streams", "description": "Live event streams for regional centers"},
            {"name": "audit", "description": "Exports of the ledger for auditors"},
            {
                "name": "customers",
                "description": "Personal data: subject access, erasure, legal holds, read log",
            },
            {"name": "operations", "description": "Parked (poison) events, for administrators"},
        ],
    )

"""The parts service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from services.parts.routes import router
from shared.app.platform import Platform
from shared.http.app import create_service_app


def create_app(platform: Platform | None = None) -> FastAPI:
    return create_service_app(
        service="parts",
        title="Ticketline parts",
        description="Spare parts for the service network: the catalogue, stock per location "
        "(headquarters, regional centers, service points), requisitions for tickets "
        "(reserve at the nearest location holding the part, issue, consume on repair, "
        "return unused), old-part returns with due dates, and replenishment suggestions "
        "explained by their inputs. Errors are RFC 9457 problem details.",
        routers=[router],
        platform=platform,
        openapi_tags=[
            {"name": "catalogue", "description": "Parts and the models they fit"},
            {"name": "locations", "description": "The stock locations' tree"},
            {"name": "stock", "description": "Stock levels and movements"},
            {"name": "requisitions", "description": "Parts for tickets"},
            {"name": "returns", "description": "Old parts replaced under warranty"},
            {"name": "replenishment", "description": "Suggested orders"},
        ],
    )

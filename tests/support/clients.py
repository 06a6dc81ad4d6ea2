"""httpx clients on the services' real ASGI apps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from shared.app.platform import Platform
from tests.support.auth import DEFAULT_ROLE_BY_SERVICE, headers_for


@asynccontextmanager
async def service_client(
    service: str, platform: Platform, **credentials: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the service's real ASGI app, acting in the service's default role
    (``credentials`` override: role, subject, region, location)."""
    from shared.app.registry import app_factory

    role = credentials.pop("role", DEFAULT_ROLE_BY_SERVICE[service])
    transport = httpx.ASGITransport(app=app_factory(service)(platform))
    async with httpx.AsyncClient(
        transport=transport,
        base_url=f"http://{service}.test",
        headers=headers_for(role, **credentials),
    ) as client:
        yield client

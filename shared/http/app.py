"""The FastAPI application shape every service shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from shared.app.config import Settings
from shared.app.observability import broker_problem
from shared.app.platform import Platform
from shared.eventstore.migrations import schema_is_current, schema_is_current_on
from shared.http.metrics import install_observability
from shared.http.problems import install_problem_handlers
from shared.http.security import install_security


class OutdatedSchema(RuntimeError):
    pass


async def get_platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    platform: Platform | None = None,
    openapi_tags: list[dict[str, str]] | None = None,
) -> FastAPI:
    """``platform`` given: the caller owns it (tests, the embedded runner). Otherwise the
    app builds one from the environment and refuses to start on an outdated schema."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = platform is None
        app.state.platform = platform or Platform.from_settings()
        if owned and not await schema_is_current(app.state.platform.db.url):
            await app.state.platform.close()
            raise OutdatedSchema(
                "The database schema is not current: run `ticketline migrate` first."
            )
        try:
            yield
        finally:
            if owned:
                await app.state.platform.close()

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=openapi_tags,
        separate_input_output_schemas=False,
    )
    app.state.service = service
    if platform is not None:
        app.state.platform = platform
    install_problem_handlers(app)
    install_security(app, (platform.settings if platform else Settings()).auth)
    for router in routers:
        app.include_router(router)
    app.include_router(health_router())

    install_observability(app, service)  # outermost: latency and correlation cover all
    return app


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get(
        "/health/ready", summary="Database reachable, schema current, broker reachable (scaled)"
    )
    async def ready(request: Request) -> JSONResponse:
        platform: Platform = request.app.state.platform
        try:
            current = await platform.db.read(schema_is_current_on)
        except Exception as exc:  # any failure means not ready
            return JSONResponse({"status": "not_ready", "detail": str(exc)}, status_code=503)
        if not current:
            return JSONResponse(
                {"status": "not_ready", "detail": "schema outdated"}, status_code=503
            )
        if problem := await broker_problem(platform.settings):
            return JSONResponse({"status": "not_ready", "detail": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    return router

"""The FastAPI application shape every service shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from alembic.util import CommandError
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection

from shared.app.config import Settings
from shared.app.importing.kinds import Kind
from shared.app.observability import broker_problem
from shared.app.platform import Platform
from shared.eventstore.migrations import schema_is_current, schema_is_current_on
from shared.http.auth.tokens import Authenticator
from shared.http.metrics import (
    Progress,
    install_observability,
    known_projections,
    projections_progress,
)
from shared.http.openapi import install_openapi
from shared.http.problems import install_problem_handlers
from shared.http.security import install_security
from shared.http.validation import valid_text_input


class OutdatedSchema(RuntimeError):
    pass


async def get_platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


async def _owned_platform() -> Platform:
    """A platform from the environment, refusing to start on an outdated schema or a
    master key that is not this database's (MasterKeyMismatch)."""
    owned = Platform.from_settings()
    try:
        if not await schema_is_current(owned.db.url):
            raise OutdatedSchema(
                "The database schema is not current: run `ticketline migrate` first."
            )
        await owned.check_personal_data()
    except BaseException:
        await owned.close()
        raise
    return owned


def _lifespan(platform: Platform | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's start and stop: ``platform`` given, the caller owns it; otherwise one
    built from the environment (refusing an outdated schema), closed at the stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = platform is None
        app.state.platform = platform or await _owned_platform()
        # Keys loaded (the embedded default's generated) at start, not on the first call:
        # `ticketline token` then signs with the key the services already use.
        app.state.authenticator = Authenticator(app.state.platform.settings)
        try:
            yield
        finally:
            if owned:
                await app.state.platform.close()

    return lifespan


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    platform: Platform | None = None,
    openapi_tags: list[dict[str, str]] | None = None,
    docs: bool = True,
    strict_query: bool = True,
) -> FastAPI:
    """``platform`` given: the caller owns it (tests, the embedded runner). Otherwise the
    app builds one from the environment and refuses to start on an outdated schema.
    ``strict_query``: an undeclared or repeated query parameter is a 422 (an API; the
    console's pages read some of theirs themselves)."""

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=_lifespan(platform),
        openapi_tags=openapi_tags,
        separate_input_output_schemas=False,
        # FastAPI's own /docs and /redoc load their scripts from a CDN; ours are local.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        # Before any route's own work: every text input is text a database can store.
        dependencies=[Depends(valid_text_input)],
        # A trailing slash is a 404 saying so, not a redirect to a URL built from the
        # caller's Host header (which a proxy or a cache would then serve to others).
        redirect_slashes=False,
    )
    app.state.service = service
    app.state.strict_query = strict_query  # valid_text_input: known_query_parameters
    if platform is not None:
        app.state.platform = platform
    install_problem_handlers(app)
    install_security(app, (platform.settings if platform else Settings()).auth)
    for router in routers:
        app.include_router(router)
    if kinds := _imports(service):
        from shared.http.importing import import_router

        app.include_router(import_router(kinds))
    app.include_router(health_router())
    if docs:
        install_offline_docs(app)

    install_observability(app, service)  # outermost: latency and correlation cover all
    install_openapi(app)
    return app


def _imports(service: str) -> Sequence[Kind]:
    """The kinds the service imports (``POST /imports/<kind>``), as it declares them."""
    from shared.app.registry import SERVERS
    from shared.app.registry import service as declared

    return declared(service).imports if service in SERVERS else ()


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get(
        "/health/ready",
        summary="Database reachable, schema current, broker reachable (scaled)",
        description="503 while the database (or, in the scaled mode, the broker) is away. "
        "The body also shows each projection's applied position, lag in ledger positions "
        "and parked events (detail only: a projection behind never makes a service unready).",
        responses={503: {"description": 'Not ready: `{"status": "not_ready", "detail": …}`'}},
    )
    async def ready(request: Request) -> JSONResponse:
        platform: Platform = request.app.state.platform
        projections = sorted(known_projections(platform).items())

        def check(conn: Connection) -> tuple[int, list[Progress]] | None:
            if not schema_is_current_on(conn):
                return None
            return platform.store.last_position(conn), projections_progress(conn, projections)

        if gone := platform.db.file_problem():
            return JSONResponse({"status": "not_ready", "detail": gone}, status_code=503)
        try:
            found = await platform.db.read(check)
        except Exception as exc:  # any failure means not ready
            detail = f"database unavailable: {type(exc).__name__}: {exc}"
            if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
                detail = (  # reachable: its schema has a revision this release does not know
                    f"the database was migrated by a newer release ({exc}): run that "
                    "release, or restore the backup taken before its migration"
                )
            return JSONResponse({"status": "not_ready", "detail": detail}, status_code=503)
        if found is None:
            return JSONResponse(
                {"status": "not_ready", "detail": "schema outdated"}, status_code=503
            )
        if problem := await broker_problem(platform.settings):
            return JSONResponse({"status": "not_ready", "detail": problem}, status_code=503)
        head, progress = found
        return JSONResponse(
            {
                "status": "ready",
                "ledger_head": head,
                "parked_events": sum(p.parked for p in progress),
                "projections": {
                    p.name: {"applied": p.applied, "lag": p.lag, "parked": p.parked}
                    for p in progress
                },
            }
        )

    # HEAD too, as uptime monitors probe (uvicorn sends the head without the body).
    for path, probe in (("/health/live", live), ("/health/ready", ready)):
        router.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)
    return router


# --- API docs that work without internet access -------------------------------------------
#
# Swagger UI and ReDoc come from the `fastapi-offline` wheel: it ships exactly the files
# FastAPI's default pages fetch from the CDN (Swagger UI 5, which renders the OpenAPI 3.1
# documents FastAPI writes, and ReDoc 2), about 0.8 MB compressed, with no dependency but
# FastAPI, and follows each new Swagger UI / ReDoc release. We only use its files, not its
# app factory. The alternatives weighed: `swagger-ui-bundle` is stuck at Swagger UI 4.15
# (cannot render OpenAPI 3.1) and has no ReDoc; vendoring the minified files would add
# about 2.8 MB to the repository on every upgrade.
DOCS_ASSETS_URL = "/docs/assets"


def docs_assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


# ReDoc's sidebar shows the Redocly logo from Redocly's CDN (hard-coded, no option turns it
# off). Offline there is no such host: an empty source makes ReDoc drop the image.
REDOC_EXTERNAL_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@lru_cache(maxsize=1)
def offline_redoc_script() -> bytes:
    script = (docs_assets_dir() / "redoc.standalone.js").read_bytes()
    return script.replace(REDOC_EXTERNAL_LOGO, b"")


def install_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` served with local assets only: no request of
    either page leaves the service. Plain routes (not API routes): no credentials, not in
    the OpenAPI document, like FastAPI's own docs pages."""
    assert app.openapi_url
    openapi_url = app.openapi_url
    oauth2_redirect = "/docs/oauth2-redirect"

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{base}{openapi_url}",
            title=f"{app.title} — API docs",
            swagger_js_url=f"{base}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_ASSETS_URL}/favicon.png",
            oauth2_redirect_url=f"{base}{oauth2_redirect}",
            # No online validator badge (it would call validator.swagger.io).
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    async def swagger_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=f"{base}{openapi_url}",
            title=f"{app.title} — API reference",
            redoc_js_url=f"{base}{DOCS_ASSETS_URL}/redoc.offline.js",
            redoc_favicon_url=f"{base}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect, swagger_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)

    async def redoc_script(_request: Request) -> Response:
        return Response(offline_redoc_script(), media_type="text/javascript")

    app.add_route(f"{DOCS_ASSETS_URL}/redoc.offline.js", redoc_script, include_in_schema=False)
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=docs_assets_dir()), name="docs-assets")

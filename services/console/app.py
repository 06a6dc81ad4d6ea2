"""The operations console: server-rendered pages for headquarters and regional centers.

Read-only. Signs people in with the platform's tokens; every page applies the APIs' reach
rules. Assets (htmx, its SSE extension, Chartist, CSS) ship in ``static/``: nothing is
fetched from outside at run time (docs/console.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Scope

from services.console.auth import (
    CONSOLE_ROLES,
    CONSOLE_SCOPE,
    COOKIE,
    ConsoleForbidden,
    SignInRequired,
)
from services.console.routes import page_of, path_and_query, render, router, sign_in_page
from shared.app.platform import Platform
from shared.http.app import create_service_app
from shared.http.problems import ProblemError, field_path
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.events.registry import UnreadableEvent

log = logging.getLogger("ticketline.console")

HERE = Path(__file__).parent
STATIC = HERE / "static"


class CachedStatic(StaticFiles):
    """Versioned-by-release assets: cacheable for an hour (pages themselves are no-store)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def create_app(platform: Platform | None = None) -> FastAPI:
    app = create_service_app(
        service="console",
        title="Ticketline operations console",
        description="Read-only pages for headquarters and the regional centers.",
        routers=[router],
        platform=platform,
        docs=False,
        strict_query=False,  # pages read `next` and paging parameters themselves
    )
    app.mount("/static", CachedStatic(directory=STATIC), name="static")
    install_error_pages(app)
    return app


# A page's parts htmx fetches: no page to come back to on their own.
_FRAGMENTS = frozenset({"/session", "/board/columns", "/audit/verification"})


def _asked_page(request: Request) -> str | None:
    """The page an htmx request without ``HX-Current-URL`` asked for, if it is one."""
    if request.method != "GET" or request.url.path in _FRAGMENTS:
        return None
    return page_of(request)


def _sign_in_target(request: Request, reason: str | None) -> str:
    """Where an htmx request whose sign-in is over sends the page: the sign-in form, with
    the page to come back to and, when it expired, the notice a page load shows."""
    shown = urlsplit(request.headers.get("hx-current-url", ""))
    page = path_and_query(shown.path, shown.query) if shown.path else _asked_page(request)
    asked = {"next": page} if page else {}
    if reason == "expired":
        asked["reason"] = "expired"
    return "/sign-in" + (f"?{urlencode(asked)}" if asked else "")


async def sign_in_answer(request: Request, exc: SignInRequired) -> Response:
    """No session (or one ended): the sign-in form, or htmx sent there."""
    if request.headers.get("hx-request"):
        # htmx: the whole page to the sign-in form, and back after (200: a 401 would
        # stand in the browser's console as a failed load; htmx follows HX-Redirect).
        # Without any cookie too: a page's part asks only from a page shown signed in,
        # and the browser drops the cookie a day after the token expires (its max-age).
        target = _sign_in_target(request, exc.reason or "expired")
        response: Response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        back = page_of(request) if request.method == "GET" else None
        response = sign_in_page(request, status_code=401, reason=exc.reason, next_page=back)
    # Dropped by what the page shows (a page load, an htmx redirect), not by its live
    # stream's reconnect: the page's own /session call must still find it expired, to
    # say so on the sign-in form.
    stream = "text/event-stream" in request.headers.get("accept", "")
    if request.cookies.get(COOKIE) and not stream:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def install_error_pages(app: FastAPI) -> None:
    """Errors as pages (the sign-in form, 403, 404, 400 …), never JSON problems."""

    app.add_exception_handler(SignInRequired, sign_in_answer)  # type: ignore[arg-type]

    @app.exception_handler(ConsoleForbidden)
    async def _forbidden(request: Request, exc: ConsoleForbidden) -> HTMLResponse:
        # A console role refused a page: what that page asks (its scope, its roles).
        page = exc.principal.role in CONSOLE_ROLES and (exc.scope != CONSOLE_SCOPE or exc.roles)
        # Refused at sign-in, no session was made: nothing to sign out of, no board.
        at_sign_in = request.url.path == "/sign-in"
        return render(
            request, "error.html", status_code=403, kind="forbidden", viewer=None,
            needed_scope=exc.scope if page else None, needed_roles=exc.roles,
            at_sign_in=at_sign_in,
        )  # fmt: skip

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> HTMLResponse:
        return render(request, "error.html", status_code=404, kind="not_found", viewer=None)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(InvalidCommand)  # e.g. a page cursor this console did not write
    async def _invalid(request: Request, exc: Exception) -> HTMLResponse:
        return bad_request_page(request, exc)

    @app.exception_handler(ProblemError)  # the services' own checks (text that is no text)
    async def _problem(request: Request, exc: ProblemError) -> HTMLResponse:
        if exc.status in (400, 409, 413, 422):
            return bad_request_page(request, exc)
        kinds = {403: "forbidden", 404: "not_found"}
        kind = kinds.get(exc.status, "unavailable" if exc.status >= 500 else "bad_request")
        return render(request, "error.html", status_code=exc.status, kind=kind, viewer=None)

    @app.exception_handler(UnreadableEvent)  # a row edited into no event (ticketline verify)
    async def _damaged(request: Request, exc: UnreadableEvent) -> HTMLResponse:
        log.error("unreadable event at position %s", exc.position, exc_info=exc)
        return render(request, "error.html", status_code=500, kind="ledger_damaged", viewer=None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> HTMLResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        kind = kinds.get(exc.status_code, "forbidden")
        page = render(request, "error.html", status_code=exc.status_code, kind=kind, viewer=None)
        page.headers.update(exc.headers or {})  # a 405's Allow
        return page


def bad_request_page(request: Request, exc: Exception) -> HTMLResponse:
    """The 400 page, naming the parameters refused (as the APIs' 422 names its fields)."""
    return render(
        request, "error.html", status_code=400, kind="bad_request", viewer=None,
        fields=refused_parameters(exc),
    )  # fmt: skip


def refused_parameters(exc: Exception) -> list[str]:
    if isinstance(exc, InvalidCommand):
        names = [exc.field]
    elif isinstance(exc, ProblemError):
        names = [str(e["field"]) for e in exc.extensions.get("errors", []) if e.get("field")]
    elif isinstance(exc, RequestValidationError):
        names = [field_path(tuple(e.get("loc", ()))) for e in exc.errors()]
    else:
        names = []
    return list(dict.fromkeys(names))

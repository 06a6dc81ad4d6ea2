"""RFC 9457 problem details: the one error shape of every service."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.ledger import ConcurrencyError
from shared.kernel.errors import DomainError, Forbidden, InvalidCommand
from shared.kernel.events.registry import UnreadableEvent
from shared.kernel.patterns import error_message

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://ticketline.dev/problems/"
# Seconds a client should wait before retrying while the database is unavailable.
RETRY_AFTER_UNAVAILABLE = 2

log = logging.getLogger("ticketline.http")


def _driver_outage_types() -> tuple[type[BaseException], ...]:
    """Driver exceptions that mean "the database is away" (asyncpg when installed)."""
    try:
        from asyncpg import exceptions as pg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return ()
    return (
        pg.PostgresConnectionError,  # connection lost, refused, rejected
        pg.OperatorInterventionError,  # shutting down, starting up, cancelled
        pg.InsufficientResourcesError,  # too many connections, disk full, out of memory
        pg.InterfaceError,  # "connection is closed", "another operation is in progress"
        pg.InternalClientError,  # "cannot switch to state …": a connection left mid-query
    )


# Not the request's fault, and likely gone soon: a lost or refused connection, a
# restarting server, an exhausted pool, SQLite's lock still held after its busy timeout.
OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,  # raised by the units of work (shared/eventstore/db.py)
    sa.OperationalError,
    sa.InterfaceError,
    sa.DisconnectionError,
    sa.TimeoutError,  # no pooled connection within the pool timeout
    ConnectionError,
    TimeoutError,
    *_driver_outage_types(),
)


def is_database_outage(exc: BaseException) -> bool:
    """The exception, or one it wraps, says the database is unavailable right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OUTAGE_TYPES):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `customer.phone`.")
    message: str


class ProblemDetails(BaseModel):
    """Every 4xx/5xx body. ``rule`` names a broken lifecycle rule (409) or what was not
    found (404, e.g. ``location_not_found``); ``errors`` the fields. Extension members
    (e.g. ``required_roles``, ``required_scope``) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_BASE + "rule-violation"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    rule: str | None = Field(
        default=None,
        description="409: the broken rule (e.g. `out_of_stock`); 404: what was not found "
        "(e.g. `ticket_not_found`, `location_not_found`).",
    )
    errors: list[FieldError] | None = None
    expected_version: int | None = Field(
        default=None, description="409 `expected_version`: the version the command named."
    )
    current_version: int | None = Field(
        default=None,
        description="409 `expected_version`: the version the resource is at (absent: it "
        "moved on, the version not known).",
    )


class ProblemError(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions
        super().__init__(detail or title)


class ProblemResponse(JSONResponse):
    """A problem's JSON: text that cannot be encoded (a lone surrogate echoed in a field
    name) is written as its JSON escape instead of failing the answer."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8", "backslashreplace")


def problem_response(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = ProblemDetails(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=str(request.url.path),
        **extensions,
    )
    return ProblemResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def internal_error(request: Request) -> JSONResponse:
    """A 500 as a problem, with nothing of the cause in it (that goes to the log)."""
    return problem_response(
        request, 500, "internal-error", "Internal error", "the error was logged; retry later"
    )


def field_path(loc: tuple[Any, ...]) -> str:
    """The name a problem gives a refused input: its path without where it came from
    (``address.region``, ``region`` for a query parameter)."""
    # pydantic ends the path of a refused mapping key with "[key]": the key's path says it.
    parts = [str(p) for p in loc if p != "[key]"]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def _field_error(error: dict[str, Any]) -> FieldError:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":  # FastAPI's loc: ("body", character offset)
        offset = loc[1] if len(loc) > 1 else None
        reason = (error.get("ctx") or {}).get("error") or error.get("msg", "not JSON")
        at = f" at character {offset}" if isinstance(offset, int) else ""
        return FieldError(field="body", message=f"not valid JSON{at}: {reason}")
    return FieldError(field=field_path(loc), message=error_message(error))


def _request_errors(request: Request, exc: RequestValidationError) -> list[FieldError]:
    """The refused fields; a body sent as another media type than JSON is read by FastAPI
    as no object at all, so the media type is named instead: that is what to change."""
    found = exc.errors()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    json_like = media == "application/json" or media.endswith("+json")
    if not json_like and any(tuple(e.get("loc", ())) == ("body",) for e in found):
        sent = request.headers.get("content-type") or "none"
        message = f"send the body as application/json (not {sent})"
        return [FieldError(field="Content-Type", message=message)]
    return [_field_error(e) for e in found]


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A body that is not JSON fails before any dependency: credentials still come first.
    from shared.http.validation import authenticate_first  # a cycle at import time

    try:
        await authenticate_first(request)
    except ProblemError as unauthorized:
        return await _problem(request, unauthorized)
    errors = _request_errors(request, exc)
    return problem_response(
        request,
        422,
        "validation-error",
        "The request is not valid",
        "; ".join(f"{e.field}: {e.message}" for e in errors),
        errors=[e.model_dump() for e in errors],
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidCommand)
    return problem_response(
        request,
        422,
        "validation-error",
        "The request is not valid",
        f"{exc.field}: {exc.detail}",
        errors=[{"field": exc.field, "message": exc.detail}],
    )


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Forbidden)
    return problem_response(
        request,
        403,
        "forbidden",
        "Your role may not do this",
        f"{exc.field}: {exc.detail}",
        errors=[{"field": exc.field, "message": exc.detail}],
    )


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    if exc.status_code == 404:  # ``rule`` says what was not found (location_not_found)
        return problem_response(request, 404, "not-found", "Not found", exc.detail, rule=exc.rule)
    if exc.status_code == 503:  # something the rule needs cannot be read now
        return problem_response(
            request, 503, "service-unavailable", "Unavailable", exc.detail, rule=exc.rule
        )
    return problem_response(
        request,
        exc.status_code,
        "rule-violation",
        "Lifecycle rule violated",
        exc.detail,
        rule=exc.rule,
    )


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConcurrencyError)
    now = "has moved on" if exc.actual is None else f"is at version {exc.actual}"
    return problem_response(
        request,
        409,
        "version-conflict",
        "The resource changed since you read it",
        f"it {now}, not {exc.expected}: read it again (its ETag) and decide again",
        rule="expected_version",
        expected_version=exc.expected,
        current_version=exc.actual,
    )


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extensions
    )


async def _unreadable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnreadableEvent)
    log.error("unreadable event at position %s", exc.position, exc_info=exc)
    return problem_response(
        request,
        500,
        "ledger-damaged",
        "A stored event cannot be read",
        exc.explained,
        position=exc.position,
    )


def _driver_cause(exc: BaseException) -> BaseException:
    """The driver's own error under the wrappers (disk full, locked, I/O error): what an
    operator acts on."""
    for _ in range(4):
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


async def _database(request: Request, exc: Exception) -> JSONResponse:
    if is_database_outage(exc):
        log.warning("database unavailable: %s (%s)", type(exc).__name__, _driver_cause(exc))
        return problem_response(
            request,
            503,
            "service-unavailable",
            "The database is unavailable",
            "retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
            retry_after=RETRY_AFTER_UNAVAILABLE,
        )
    log.error("unhandled database error", exc_info=exc)
    return internal_error(request)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Never a plain-text 500 (also Starlette's last resort, for an error in a middleware).
    if is_database_outage(exc):
        return await _database(request, exc)
    return internal_error(request)


class UnhandledErrorMiddleware:
    """An error no handler took answers its 500 problem here, inside the other middlewares
    (security headers, correlation id) and on a connection that stays open. Starlette's own
    last resort answers outside every middleware, then re-raises, and the server drops the
    connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:  # too late for another answer
                raise
            if not is_database_outage(exc):
                log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            response = await _unhandled(Request(scope, receive), exc)
            await response(scope, receive, send)


# Valid JSON no reader takes: the framework's body parsing answers a bare 400 for it.
_UNREADABLE_JSON = {
    ValueError: "a number of more than 4300 digits: no field takes one",
    RecursionError: "nested deeper than any field of this API",
}


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    cause = type(exc.__cause__)
    if exc.status_code == 400 and cause in _UNREADABLE_JSON:
        from shared.http.validation import invalid  # a cycle at import time

        return await _problem(request, invalid("body", _UNREADABLE_JSON[cause]))
    if exc.status_code == 400 and cause is UnicodeDecodeError:
        from shared.http.validation import not_utf8

        return await _problem(request, not_utf8("not UTF-8 text; JSON is sent as UTF-8"))
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else None
    title = detail or "HTTP error"
    headers = dict(exc.headers) if exc.headers else {}
    rule = None
    if exc.status_code == 404 and detail in (None, "Not Found"):  # the router's: no route
        title, rule = "Not found", "no_such_path"
        path = request.url.path
        slash = " (without its trailing slash?)" if path.endswith("/") and path != "/" else ""
        detail = f"no resource at {path}{slash}: see /docs"
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
        title = "Method not allowed"
        detail = f"{request.method} {request.url.path}: allowed {headers['Allow'] or 'none'}"
    return problem_response(
        request, exc.status_code, slug, title, detail, headers or None, rule=rule
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method of the routes at this path (Starlette's 405 names only the first
    route's, so ``DELETE /tickets`` said ``Allow: POST`` though GET is there too)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "\0"}  # no route's method: a path match is PARTIAL
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


# Every error the services raise, as the problem it answers with.
HANDLERS: tuple[tuple[type[Exception], Any], ...] = (
    (RequestValidationError, _validation),
    (InvalidCommand, _invalid),
    (Forbidden, _forbidden),
    (DomainError, _domain),
    (ConcurrencyError, _conflict),
    (UnreadableEvent, _unreadable),
    (ProblemError, _problem),
    (sa.DBAPIError, _database),
    *((t, _database) for t in OUTAGE_TYPES if issubclass(t, Exception)),
    (Exception, _unhandled),
    (HTTPException, _http),
)


def install_problem_handlers(app: FastAPI) -> None:
    """Before any other middleware: the last resort is the innermost one."""
    for kind, handler in HANDLERS:
        app.add_exception_handler(kind, handler)
    app.add_middleware(UnhandledErrorMiddleware)


def problem_doc(description: str) -> dict[str, Any]:
    """A ``responses`` entry for a problem answer a route adds to the shared ones
    (shared/http/openapi.py documents 401/403/404/409/422/… by what each route reads)."""
    return {"model": ProblemDetails, "description": description}


# Router-level: the answers of every route behind credentials; the rest follow from what
# each route reads (shared/http/openapi.py).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem_doc("No valid credentials (`WWW-Authenticate: Bearer`)"),
    403: problem_doc("Role or scope not allowed; the body names what is missing"),
}

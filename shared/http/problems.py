"""RFC 9457 problem details: the one error shape of every service."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.ledger import ConcurrencyError
from shared.kernel.errors import DomainError, InvalidCommand

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://ticketline.dev/problems/"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `customer.phone`.")
    message: str


class ProblemDetails(BaseModel):
    """Every 4xx/5xx body. ``rule`` names a broken lifecycle rule; ``errors`` the fields.
    Extension members (e.g. ``required_roles``, ``required_scope``) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_BASE + "rule-violation"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    rule: str | None = None
    errors: list[FieldError] | None = None


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
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(field=_field_path(tuple(e.get("loc", ()))), message=e.get("msg", "invalid"))
            for e in exc.errors()
        ]
        return problem_response(
            request,
            422,
            "validation-error",
            "The request is not valid",
            "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=[e.model_dump() for e in errors],
        )

    @app.exception_handler(InvalidCommand)
    async def _invalid(request: Request, exc: InvalidCommand) -> JSONResponse:
        return problem_response(
            request,
            422,
            "validation-error",
            "The request is not valid",
            f"{exc.field}: {exc.detail}",
            errors=[{"field": exc.field, "message": exc.detail}],
        )

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        if exc.status_code == 404:
            return problem_response(request, 404, "not-found", "Not found", exc.detail)
        return problem_response(
            request,
            exc.status_code,
            "rule-violation",
            "Lifecycle rule violated",
            exc.detail,
            rule=exc.rule,
        )

    @app.exception_handler(ConcurrencyError)
    async def _conflict(request: Request, exc: ConcurrencyError) -> JSONResponse:
        return problem_response(
            request,
            409,
            "version-conflict",
            "The resource changed since you read it",
            str(exc),
            rule="expected_version",
        )

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extensions
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            request,
            exc.status_code,
            slug,
            detail or "HTTP error",
            detail,
            getattr(exc, "headers", None),
        )


def install_outage_handler(app: FastAPI) -> None:
    """A database that is away (restarting, unreachable, a connection lost before commit)
    is a 503 with ``Retry-After``: the work did not commit, and trying again is safe
    (commands carry an ``Idempotency-Key``)."""

    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return problem_response(
            request,
            503,
            "database-unavailable",
            "The database is unavailable; retry shortly",
            str(exc),
            {"Retry-After": "2"},
        )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetails, "description": description}
    for status, description in {
        401: "No valid credentials (`WWW-Authenticate: Bearer`)",
        403: "Role or scope not allowed; the body names what is missing",
        404: "Unknown resource (or outside the caller's region)",
        409: "Lifecycle rule violated, version conflict, or idempotency key reused",
        422: "Invalid input; `errors` names each offending field",
    }.items()
}

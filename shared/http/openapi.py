"""The OpenAPI document every service publishes: its error answers and header formats.

FastAPI documents what routes declare. The conventions every route shares are added here,
once, from what each operation has: every error answer is ``application/problem+json``
(``ProblemDetails``) — 401/403 where credentials are needed, 422 where anything is read,
400 and 413 where a body is, 404 for a resource named in the path, 409 for commands, 503
when the database is away (with ``Retry-After``) — and every operation documents the
``X-Correlation-ID`` header. Header formats (If-Match, Idempotency-Key, Last-Event-ID)
come from their declarations in shared/http/headers.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import FastAPI

from shared.http.problems import PROBLEM_MEDIA_TYPE, ProblemDetails

DESCRIPTIONS = {
    400: "The body is not readable: not UTF-8 (JSON is sent as UTF-8), or an upload cut off "
    "(JSON nested deeper than any field, or a number no field takes, is a 422 naming `body`)",
    401: "No valid credentials (`WWW-Authenticate: Bearer`)",
    403: "Role or scope not allowed; the body names what is missing",
    404: "Unknown resource, or one outside the caller's reach (region, assignment)",
    409: "Lifecycle rule violated (`rule`), version conflict (`If-Match`), or a concurrent "
    "request with the same `Idempotency-Key` not settled (`idempotency-conflict`: retry)",
    413: "Request body above the size limit",
    422: "Invalid input; `errors[].field` names each offending field, query parameter or "
    "header (an `Idempotency-Key` reused with another body: `idempotency-key-reused`)",
    429: "Rate limited (`Retry-After`)",
    500: "Internal error (logged; the body says nothing of the cause)",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}
RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}
WWW_AUTHENTICATE = {
    "description": 'The challenge: `Bearer realm="ticketline"` (with `error="invalid_token"` '
    "for credentials that were sent but are not valid).",
    "schema": {"type": "string"},
}
CORRELATION_HEADER = {
    "name": "X-Correlation-ID",
    "in": "header",
    "required": False,
    "description": "A UUID that ties this request to the events it records and to the log "
    "lines; echoed in the answer. Another value is replaced by a new UUID (not refused).",
    "schema": {"type": "string"},
}
ETAG = {
    "description": 'The version of the state answered (`"3"`; a past state\'s with `as_of`): '
    "send it back in `If-Match` to act only on that version.",
    "schema": {"type": "string"},
}
LOCATION = {"description": "Where the created resource is read.", "schema": {"type": "string"}}
REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the "
    "same `Idempotency-Key` (nothing was done again).",
    "schema": {"type": "string", "enum": ["true"]},
}
CORRELATION_ECHO = {
    "description": "The request's correlation id (the one given, or a new one).",
    "schema": {"type": "string", "format": "uuid"},
}
COMMAND_METHODS = {"post", "put", "patch", "delete"}
# Probes answer in their own shape (a readiness 503 is `{"status": "not_ready"}`).
PROBES = "/health/"


def problem_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    statuses = {int(s) for s in operation.get("responses", {}) if str(s)[:1] in {"4", "5"}}
    has_body = "requestBody" in operation
    if operation.get("security"):
        statuses |= {401, 403}
    # Every operation reads its query: one it does not declare, or given twice, is a 422
    # (shared/http/validation.py known_query_parameters).
    statuses.add(422)
    if has_body:
        statuses |= {400, 413}
    if "{" in path:
        statuses.add(404)
    if method in COMMAND_METHODS and operation.get("security"):
        statuses.add(409)
    statuses.add(503)
    return statuses


def describe_problems(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["ProblemDetails"] = problem
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "put", "post", "patch", "delete", "head", "options"}:
                continue
            if path.startswith(PROBES):
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == CORRELATION_HEADER["name"] for p in parameters):
                parameters.append(dict(CORRELATION_HEADER))
            for parameter in parameters:
                _never_null(parameter)
            responses = operation.setdefault("responses", {})
            for status in sorted(problem_statuses(path, method, operation)):
                entry = responses.get(str(status), {})
                answer: dict[str, Any] = {
                    "description": entry.get("description")
                    if status in {404, 429} and entry.get("description")
                    else DESCRIPTIONS.get(status, "Error"),
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
                }
                if status in {429, 503}:
                    answer["headers"] = {"Retry-After": RETRY_AFTER}
                if status == 401:
                    answer["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
                responses[str(status)] = answer
            operation["responses"] = dict(sorted(responses.items()))
            _answer_headers(document, path, method, operation)
    _local_times(document)
    # FastAPI's own validation-error shapes are never answered (422 is a problem).
    text = repr(document["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}'" not in text:
            schemas.pop(name, None)
    return document


def _never_null(parameter: dict[str, Any]) -> None:
    """An optional header or query parameter is absent or text, never null: FastAPI's
    ``anyOf [X, null]`` for it made generated clients send the text "null"."""
    schema = parameter.get("schema", {})
    choices = schema.get("anyOf", [])
    if parameter.get("in") in {"header", "query"} and len(choices) == 2:
        kept = [c for c in choices if c.get("type") != "null"]
        if len(kept) == 1:
            del schema["anyOf"]
            schema.update(kept[0])


def _answer_headers(
    document: dict[str, Any], path: str, method: str, operation: dict[str, Any]
) -> None:
    """The headers a success carries (shared/http/idempotency.py ``to_response``, the
    correlation middleware): ``X-Correlation-ID`` always; ``ETag`` on a command's answer
    with a version, and on a read of what commands take ``If-Match`` for; a command's 201
    ``Location`` where the created resource has a read; ``Idempotent-Replayed``."""
    keyed = any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", []))
    command = method in COMMAND_METHODS
    for status, answer in operation["responses"].items():
        if not status.startswith("2"):
            continue
        headers = answer.setdefault("headers", {})
        headers.setdefault("X-Correlation-ID", CORRELATION_ECHO)
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        versioned = "version" in _resolved(document, schema).get("properties", {})
        if versioned and (command or _matched_below(document, path)):
            headers.setdefault("ETag", ETAG)
        if command and status == "201" and _created_is_read(document, path, method):
            headers.setdefault("Location", LOCATION)
        if keyed:
            headers.setdefault("Idempotent-Replayed", REPLAYED)


def _matched_below(document: dict[str, Any], path: str) -> bool:
    """A command at or below ``path`` takes ``If-Match`` (so a read there sends its ETag)."""
    for other, operations in document.get("paths", {}).items():
        if other == path or other.startswith(path.rstrip("/") + "/"):
            for method, operation in operations.items():
                names = {p.get("name") for p in operation.get("parameters", [])}
                if method in COMMAND_METHODS and "If-Match" in names:
                    return True
    return False


def _created_is_read(document: dict[str, Any], path: str, method: str) -> bool:
    """``POST /things`` or ``PUT /things/{id}`` with a ``GET /things/{id}``: the answer
    says where (``Location``)."""
    paths = document.get("paths", {})
    if method == "put":
        return "get" in paths.get(path, {})
    return any(
        "get" in operations
        and other.startswith(path.rstrip("/") + "/{")
        and other.count("/") == path.count("/") + 1
        for other, operations in paths.items()
    )


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"].get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


# JSON Schema's ``format: time`` is RFC 3339's full-time, which needs an offset; the
# services take and give a local time of day (its timezone is given beside it).
LOCAL_TIME = {
    "type": "string",
    "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
    "description": "A local time of day, HH:MM or HH:MM:SS, without an offset.",
    "examples": ["09:00"],
}


def _local_times(document: dict[str, Any]) -> None:
    """Every ``format: time`` the models declare, as the local time it is. Here, not on
    the type: the event contract (docs/contract) publishes the models' schemas, frozen."""
    pending: list[Any] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("format") == "time" and node.get("type") == "string":
                del node["format"]
                node.update({k: v for k, v in LOCAL_TIME.items() if k not in node})
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def install_openapi(app: FastAPI) -> None:
    described: list[dict[str, Any]] = []
    made_on: list[date] = []

    def openapi() -> dict[str, Any]:
        # Made again each day: some examples are dated from today (an appointment
        # tomorrow), so that they work when sent as shown.
        today = datetime.now(UTC).date()
        if made_on != [today]:
            app.openapi_schema = None
            made_on[:] = [today]
        document = FastAPI.openapi(app)  # cached by FastAPI until the routes change
        if not described or described[0] is not document:
            described[:] = [describe_problems(document)]
        return document

    app.openapi = openapi  # type: ignore[method-assign]

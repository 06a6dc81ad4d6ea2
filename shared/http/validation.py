"""Input text is valid text: one check on every request, before any work.

``valid_text_input`` is a global dependency of every service app (shared/http/app.py). It
looks at everything a route can read as text — the JSON body (every key and string value,
at any depth), query and path values, and the headers the services read — and answers 422
naming the field when one holds a character PostgreSQL text cannot store (NUL), a lone
surrogate or a control character (shared/kernel/text.py). Token claims go through the
same rule in the claims schema (shared/http/auth/tokens.py).

The check is by content, not by schema, so a new field or route is covered without
declaring anything.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import QueryParams

from shared.http.context import CREDENTIAL_SCHEMES, authenticator, principal_of
from shared.http.problems import ProblemError
from shared.http.security import UPLOAD_PREFIX
from shared.kernel.text import DuplicateKey, invalid_text_reason, unique_keys

# The request headers a service reads as text (credentials: the claims schema's job).
CHECKED_HEADERS = ("Idempotency-Key", "If-Match", "Last-Event-ID", "X-Correlation-ID")
# Set by the observability middleware when it replaced the caller's correlation id.
GIVEN_CORRELATION_ID = "ticketline.given_correlation_id"


def not_utf8(reason: str) -> ProblemError:
    """A JSON body that is no UTF-8 text: a 400 (docs), naming the body as a 422 would."""
    return ProblemError(
        400,
        "http-error",
        "There was an error parsing the body",
        reason,
        errors=[{"field": "body", "message": reason}],
    )


def invalid(field: str, reason: str) -> ProblemError:
    return invalid_fields([(field, reason)])


def invalid_fields(refused: list[tuple[str, str]]) -> ProblemError:
    """A 422 naming each (field, reason) refused."""
    return ProblemError(
        422,
        "validation-error",
        "The request is not valid",
        "; ".join(f"{field}: {reason}" for field, reason in refused),
        errors=[{"field": field, "message": reason} for field, reason in refused],
    )


def _check(field: str, value: str) -> None:
    reason = invalid_text_reason(value)
    if reason is not None:
        raise invalid(field or "body", reason)


def check_document(document: Any, root: str = "") -> None:
    """Every key and string in a parsed JSON document, and every number: finite (iteratively:
    depth is no risk)."""
    pending: list[tuple[str, Any]] = [(root, document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            _check(path, value)
        elif isinstance(value, float) and not math.isfinite(value):
            # json.loads reads Infinity, NaN and 1e999; no store or event can hold them.
            raise invalid(path or "body", "must be a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                _check(child, key)
                pending.append((child, item))
        elif isinstance(value, list):
            pending.extend(
                (f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value)
            )


def _json_body(request: Request) -> bool:
    """Whether the body is read as JSON: no content type, or a JSON one (as FastAPI does)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


async def valid_text_input(request: Request) -> None:
    await authenticate_first(request)
    await _check_input(request)


async def authenticate_first(request: Request) -> None:
    """Without valid credentials a route answers 401 (raised here) before looking at its
    input, nor does an anonymous caller get a large body parsed. Where verifying may fetch
    the identity provider's key set (a blocking call, up to its timeout), in a thread:
    never on the loop every other request waits on."""
    if needs_credentials(request):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer" and token.strip()
        if bearer and authenticator(request).may_fetch_keys(token.strip()):
            await asyncio.to_thread(principal_of, request)
        else:
            principal_of(request)


def needs_credentials(request: Request) -> bool:
    """Whether the request's route reads credentials (found once per route)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return False
    needs: bool | None = getattr(route, "_needs_credentials", None)
    if needs is None:
        needs = False
        pending = [route.dependant]
        while pending and not needs:
            dependant = pending.pop()
            needs = any(d.call in CREDENTIAL_SCHEMES for d in dependant.dependencies)
            pending.extend(dependant.dependencies)
        route._needs_credentials = needs  # type: ignore[attr-defined]
    return needs


def _check_query_encoding(request: Request) -> None:
    """Each query parameter's bytes are UTF-8: Starlette reads others as U+FFFD without a
    word, and a filter would quietly match nothing (or be echoed back garbled)."""
    raw: bytes = request.scope.get("query_string", b"")
    if b"%" not in raw and raw.isascii():
        return
    for part in raw.split(b"&"):
        name, _, value = part.partition(b"=")
        for piece in (name, value):
            try:
                unquote_to_bytes(piece.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                field = unquote_to_bytes(name).decode("utf-8", "replace") or "query"
                raise invalid(field, "not UTF-8 text") from None


async def _check_input(request: Request) -> None:
    _check_query_encoding(request)
    for name, value in request.query_params.multi_items():
        _check("query", name)
        _check(name, value)
    trim_query(request)
    if request.query_params and getattr(request.app.state, "strict_query", False):
        known_query_parameters(request)
    for name, value in request.path_params.items():
        if isinstance(value, str):
            _check(name, value)
    for header in CHECKED_HEADERS:
        if (given_header := request.headers.get(header)) is not None:
            _check(header, given_header)
    given = request.scope.get("state", {}).get(GIVEN_CORRELATION_ID)
    if given is not None:
        _check("X-Correlation-ID", given)
    if request.method in {"GET", "HEAD", "OPTIONS", "DELETE"}:
        return
    if not _json_body(request) or request.url.path.startswith(UPLOAD_PREFIX):
        return  # a file upload (streamed by its route, which checks its text itself)
    body = await request.body()  # cached: the route's own parsing reads the same bytes
    if not body:
        return
    if (encoding := json.detect_encoding(body)) not in {"utf-8", "utf-8-sig"}:
        # json.loads reads UTF-16 and UTF-32 too; JSON between systems is UTF-8 (RFC 8259),
        # and a body in another encoding is refused like one that is not UTF-8 at all.
        raise not_utf8(f"the body is {encoding.upper()}; JSON is sent as UTF-8 (RFC 8259)")
    try:
        # Read again, keeping each object's keys: a key given twice is no input to guess
        # at (json.loads keeps the last one). About 8 µs for a ticket.
        document = json.loads(body, object_pairs_hook=unique_keys)
    except DuplicateKey as exc:
        where = duplicate_key_path(body) or exc.key
        raise invalid(where, "given more than once in its object") from None
    except (ValueError, RecursionError):
        return  # not JSON (or no reader takes it): the route's body parsing answers
    if may_hold_invalid_text(body) or may_hold_non_finite(body):
        check_document(document)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as read, its keys in order, repeats kept."""


def duplicate_key_path(body: bytes) -> str | None:
    """The dotted path (``address.region``, ``items.0.part_number``) of the first key given
    twice in its object: the name every other 422 of a body gives a field. Read only when
    a duplicate was found, so its second parse costs nothing on the way in."""

    def walk(node: Any, path: str) -> str | None:
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for key, _ in node:
                if key in seen:
                    return f"{path}.{key}" if path else key
                seen.add(key)
            children = [(f"{path}.{key}" if path else key, value) for key, value in node]
        elif isinstance(node, list):
            children = [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node)]
        else:
            return None
        return next((found for at, v in children if (found := walk(v, at))), None)

    try:
        return walk(json.loads(body, object_pairs_hook=_Pairs), "")
    except (ValueError, RecursionError):
        return None


def trim_query(request: Request) -> None:
    """Every query value read trimmed — codes, months, choices and numbers alike, not only
    the types that strip themselves, and by their rule (``str.strip``: NEL, no-break and
    ideographic spaces too) — by rewriting the query the route then reads
    (`?month=2026-11%20` is 2026-11, as `?region=%20east` is east)."""
    pairs = request.query_params.multi_items()
    if all(value == value.strip() for _name, value in pairs):
        return
    trimmed = [(name, value.strip()) for name, value in pairs]
    request.scope["query_string"] = urlencode(trimmed).encode("latin-1")
    # Starlette keeps the parsed query on the request the route's parameters come from.
    request._query_params = QueryParams(trimmed)


# Probes and the metrics scrape answer whatever a monitor appends (a cache-buster).
UNCHECKED_QUERY = ("/health/", "/metrics")


def known_query_parameters(request: Request) -> None:
    """A query parameter the route does not declare, or one given twice, is a 422 naming
    it: a misspelled or repeated filter silently dropped (or the last one winning) would
    answer 200 with another list than the one asked for."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.path.startswith(UNCHECKED_QUERY):
        return
    declared = _declared_query(route)
    seen: set[str] = set()
    for name, _value in request.query_params.multi_items():
        if name not in declared:
            raise invalid(name, "not a query parameter of this operation")
        if name in seen:
            raise invalid(name, "given more than once")
        seen.add(name)


def _declared_query(route: APIRoute) -> frozenset[str]:
    """The query parameters of the route and of every dependency it has (kept on the
    route: found once)."""
    known: frozenset[str] | None = getattr(route, "_declared_query", None)
    if known is None:
        known = _query_of(route)
        route._declared_query = known  # type: ignore[attr-defined]
    return known


def _query_of(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        for param in dependant.query_params:
            model = param.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                names.update(f.alias or n for n, f in model.model_fields.items())
            else:
                names.add(param.alias)
        pending.extend(dependant.dependencies)
    return frozenset(names)


def may_hold_invalid_text(body: bytes) -> bool:
    """Whether a string parsed from this JSON text can hold NUL, a lone surrogate or a
    control character: only through a ``\\u``, ``\\b`` or ``\\f`` escape (JSON refuses C0
    raw in a string), a NUL or DEL byte, the UTF-8 lead byte 0xC2 of U+0080–U+00BF (raw C1
    controls), or the lead byte 0xED of U+D000–U+DFFF
    (``json.loads`` decodes with ``surrogatepass``; UTF-16/32 bodies have NUL bytes). Most
    bodies have none of them and skip the walk."""
    return (
        b"\\u" in body
        or b"\\b" in body
        or b"\\f" in body
        or b"\x00" in body
        or b"\x7f" in body
        or b"\xc2" in body  # the UTF-8 lead byte of U+0080-U+00BF (the C1 controls among them)
        or b"\xed" in body
    )


# A float beyond 1.8e308 has an exponent of three digits or a mantissa of over 200 digits.
_BIG_NUMBER = re.compile(rb"[eE][+-]?0*[1-9][0-9]{2}|[0-9]{200}")


def may_hold_non_finite(body: bytes) -> bool:
    """Whether ``json.loads`` can read a non-finite float from this JSON text: the
    ``Infinity`` and ``NaN`` literals it accepts, or a number too large for a float."""
    return b"Infinity" in body or b"NaN" in body or _BIG_NUMBER.search(body) is not None

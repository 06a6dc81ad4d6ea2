"""Request headers every service reads the same way, parsed by shared/http/params.py: a
value outside its format is a 422 problem naming the header, before any work starts."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Header, Query, Request, Response

from shared.http.params import MAX_POSITION, MAX_STREAM_VERSION, parse_ascii_uint
from shared.http.problems import ProblemError

_VERSION = "(0|[1-9][0-9]{0,8})"  # as an ETag spells it: "01" is no ETag we give
IF_MATCH_PATTERN = rf'^(W/)?("{_VERSION}"|{_VERSION})$'
IDEMPOTENCY_KEY_MAX = 200
LAST_EVENT_ID_PATTERN = r"^[0-9]{1,19}$"


def invalid_header(name: str, message: str) -> ProblemError:
    return ProblemError(
        422,
        "validation-error",
        "The request is not valid",
        f"{name}: {message}",
        errors=[{"field": name, "message": message}],
    )


def if_match_header() -> Any:
    """The ``If-Match`` request header as a route (or dependency) parameter declares it."""
    return Header(
        default=None,
        alias="If-Match",
        description='The stream version you last read (the ETag, e.g. `"3"`; `W/"3"` and '
        "`3` are accepted too): at most 9 ASCII digits. A stale version gets 409 "
        "instead of overwriting someone else's change.",
        json_schema_extra={"pattern": IF_MATCH_PATTERN, "examples": ['"3"']},
    )


def idempotency_key_header() -> Any:
    """The ``Idempotency-Key`` request header as a parameter declares it."""
    return Header(
        default=None,
        alias="Idempotency-Key",
        description="Retry-safe key (1 to 200 characters, e.g. a UUID): the same key returns "
        "the first result, never a second one.",
        json_schema_extra={"minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
    )


def parse_if_match(if_match: str | None) -> int | None:
    """The stream version ``If-Match`` names (None without one); 422 when malformed — of
    another form than the published pattern (``" 1"`` too)."""
    if if_match is None:
        return None
    given = if_match.strip()
    if re.fullmatch(IF_MATCH_PATTERN, given) is None:
        raise invalid_header("If-Match", 'not a stream version such as "3"')
    try:
        return parse_ascii_uint(given.removeprefix("W/").strip('"'), maximum=MAX_STREAM_VERSION)
    except ValueError as exc:
        raise invalid_header("If-Match", f'not a stream version such as "3": {exc}') from None


def check_idempotency_key(idempotency_key: str | None) -> str | None:
    """The key without the spaces around it (not part of a header's value, RFC 9110: a
    retry that trims them is the same request); 422 when empty or too long."""
    if idempotency_key is None:
        return None
    key = idempotency_key.strip(" \t")
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise invalid_header("Idempotency-Key", f"1 to {IDEMPOTENCY_KEY_MAX} characters")
    return key


def given_once(request: Request, *names: str) -> None:
    """422 naming a header sent more than once: which copy counts would be a guess (two
    credentials are a 401 for the same reason)."""
    for name in names:
        if len(request.headers.getlist(name)) > 1:
            raise invalid_header(name, "given more than once")


def last_event_id(
    last_event_id: str | None = Header(
        default=None,
        alias="Last-Event-ID",
        description="Resume after this global position (the `id` of the last message "
        "received): ASCII digits, at most 2^63-1.",
        json_schema_extra={"pattern": LAST_EVENT_ID_PATTERN},
    ),
    in_query: str | None = Query(
        default=None,
        alias="lastEventId",
        description="The same as the `Last-Event-ID` header, for EventSource polyfills that "
        "resend it in the query on reconnecting (the header wins when both are given).",
        json_schema_extra={"pattern": LAST_EVENT_ID_PATTERN},
    ),
) -> int | None:
    given, name = (
        (last_event_id, "Last-Event-ID") if last_event_id is not None else (in_query, "lastEventId")
    )
    if given is None:
        return None
    try:
        return parse_ascii_uint(given, maximum=MAX_POSITION)
    except ValueError as exc:
        raise invalid_header(name, f"not a global position: {exc}") from None


def etag(version: int) -> str:
    return f'"{version}"'


# A list answered as a JSON array says where its next page is (RFC 8288).
NEXT_PAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Link": {
                "description": 'The next page, `<URL>; rel="next"` (its `cursor` parameter '
                "set); absent on the last page.",
                "schema": {"type": "string"},
            }
        }
    }
}


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """The ``Link`` header of a page that has a next one: this request with ``cursor``."""
    if cursor is not None:
        url = request.url.include_query_params(cursor=cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'

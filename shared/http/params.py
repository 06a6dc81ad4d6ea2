"""The one parsing layer for values the services read from headers, queries and paths.

Every such value is parsed here, into its type and within the range its column or its
computation can hold, so that a value outside its type is a 422 problem naming the field
before any work starts — never a 500, nor a 200 stream that dies on the first query, nor
a filter silently dropped:

- integers are ASCII digits only (``str.isdigit`` and ``int()`` accept '٣' and other
  scripts' digits) and bounded: global positions by PostgreSQL's BIGINT, stream versions
  by the ``stream_version`` INTEGER column;
- ISO weeks and months are ASCII, real calendar periods whose end is a representable date;
- times carry a timezone and convert to UTC without leaving the calendar;
- filters have the shape of what they filter (a phone filter is a phone number, a region
  filter a region code, …), so a malformed filter is rejected instead of matching all.

Use the ``Annotated`` types below as query, path or body field types; headers are parsed
by the dependencies in ``shared/http/headers.py`` with the functions here. Declare a
required parameter as ``week: Annotated[IsoWeek, Query(...)]``, an optional one as
``week: IsoWeek | None = Query(...)`` or ``= None``: FastAPI drops the type's checks from
``week: IsoWeek = Query(...)`` (the hostile-input table in tests/test_fuzz.py notices).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, Request
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints

from shared.kernel.errors import InvalidCommand
from shared.kernel.events.network import NetworkId, ProductLine
from shared.kernel.events.parts import LocationId, PartNumber
from shared.kernel.events.tickets import Phone
from shared.kernel.patterns import worded
from shared.kernel.text import check_text
from shared.readmodels.paging import NOT_ISSUED, decode_cursor

# PostgreSQL BIGINT (events.position, event_sequence.last_position).
MAX_POSITION = 2**63 - 1
# PostgreSQL INTEGER (events.stream_version and every read model's version column).
MAX_STREAM_VERSION = 2**31 - 1

_ASCII_UINT = re.compile(r"[0-9]{1,19}")


def parse_ascii_uint(raw: str, *, maximum: int) -> int:
    """``raw`` as a non-negative integer of ASCII digits up to ``maximum``, or ValueError
    saying why not (never a 4300-digit conversion, never another script's digits)."""
    text = raw.strip()
    if not _ASCII_UINT.fullmatch(text):
        raise ValueError(f"must be a whole number of ASCII digits 0-9, at most {maximum}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"must be at most {maximum}")
    return value


def _bounded_uint(maximum: int) -> BeforeValidator:
    def parse(value: Any) -> Any:
        if isinstance(value, str):
            return parse_ascii_uint(value, maximum=maximum)
        return value  # JSON numbers: the Field bounds below apply

    return BeforeValidator(parse)


# A global position in the ledger (``from_position``, ``Last-Event-ID``, cursors).
# (The bounds come first: after the text parser they would reach the JSON Schema as
# unknown ``ge``/``le`` keys, not ``minimum``/``maximum``.)
Position = Annotated[
    int,
    Field(ge=0, le=MAX_POSITION, description="A global position: 0 … 2^63-1."),
    _bounded_uint(MAX_POSITION),
]
# An entry of a log paged by id (the read log's ``next_after``).
EntryId = Annotated[
    int,
    Field(ge=0, le=MAX_POSITION, description="The `next_after` of the previous page."),
    _bounded_uint(MAX_POSITION),
]
# A count asked for in a query (``limit``, ``batch``) is ASCII digits like the others
# (``int()`` also reads ``2_0``, ``+2`` and ``2.0``), bounded by its ``Query`` — placed
# before this parser, so the bounds reach the schema as ``minimum``/``maximum``:
# ``limit: Annotated[int, Query(ge=1, le=200), ASCII_COUNT] = 50``.
ASCII_COUNT = _bounded_uint(MAX_STREAM_VERSION)
# A stream version (``If-Match``).
StreamVersion = Annotated[
    int,
    Field(ge=0, le=MAX_STREAM_VERSION),
    _bounded_uint(MAX_STREAM_VERSION),
]


def _iso_week(value: str) -> str:
    year, number = value.split("-W")
    try:
        monday = date.fromisocalendar(int(year), int(number), 1)
    except ValueError:
        raise ValueError(f"{value} is not a week of that year") from None
    try:
        monday + timedelta(days=7)  # the report reads up to the next Monday
    except OverflowError:
        raise ValueError(f"{value}: weeks end at {_LAST_WEEK}, the last whole one") from None
    return value


# The last week whose next Monday is still a date (the report reads up to it).
_LAST_WEEK = "9999-W51"


def _iso_month(value: str) -> str:
    if int(value[:4]) < 1:
        raise ValueError("the year must be 0001 or later")
    return value


# A year 0001-9999 (no year 0: the calendar starts at 1), spelled without a lookahead (the
# published pattern is what clients generate and check against).
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
# ``2026-W47``: ASCII digits (a regex ``\d`` also matches other scripts' digits), a week
# that exists in that year, and whose following Monday is still a date.
_WEEK_PATTERN = rf"^{_YEAR}-W(0[1-9]|[1-4][0-9]|5[0-3])$"
_MONTH_PATTERN = rf"^{_YEAR}-(0[1-9]|1[0-2])$"


IsoWeek = Annotated[
    str,
    StringConstraints(
        pattern=worded(_WEEK_PATTERN, "an ISO week as YYYY-Www (2026-W47; weeks 01-53)")
    ),
    AfterValidator(_iso_week),
]
# ``2026-11`` (UTC calendar month).
IsoMonth = Annotated[
    str,
    StringConstraints(pattern=worded(_MONTH_PATTERN, "a month as YYYY-MM (2026-11; months 01-12)")),
    AfterValidator(_iso_month),
]


def _utc(value: datetime) -> datetime:
    try:
        converted = value.astimezone(UTC)
        # Every stored time is compared and shifted by deadlines of days: keep a margin.
        converted + timedelta(days=3660)
        converted - timedelta(days=3660)
    except OverflowError:
        raise ValueError("the time is outside the supported calendar range") from None
    return converted


_NUMBER = re.compile(r"\s*[-+]?[0-9]+(\.[0-9]*)?\s*")
# "…T09:35:10 08:00": a "+08:00" sent unencoded in a query string reads as a space.
_PLUS_AS_SPACE = re.compile(r".*T[0-9:.]+ [0-9]{2}(:?[0-9]{2})?")


def _text_time(value: object) -> object:
    # Pydantic reads a number (or a query's digits) as Unix seconds; the API documents
    # ISO 8601 text only.
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a date-time as ISO 8601 text with its timezone")
    if isinstance(value, str) and _PLUS_AS_SPACE.fullmatch(value):
        raise ValueError("the offset's + arrived as a space: send it encoded (%2B08:00), or use Z")
    return value


# A point in time with its timezone (ISO 8601 text), normalised to UTC; naive times,
# numbers, and times at the very edges of the calendar that cannot be shifted, are 422.
UtcTime = Annotated[AwareDatetime, BeforeValidator(_text_time), AfterValidator(_utc)]


def require_period(start: tuple[str, datetime | None], end: tuple[str, datetime | None]) -> None:
    """A ``[start, end)`` filter's end after its start: 422 naming the end (a reversed
    range is the caller's mistake, never an empty page)."""
    (start_name, start_at), (end_name, end_at) = start, end
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise InvalidCommand(end_name, f"must be after {start_name} (it is exclusive)")


def _json_boolean(value: object) -> object:
    # Pydantic also reads yes/no, on/off, 1/0, t/f as booleans; the API takes JSON's.
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("a flag is true or false")
    return value


# A query flag: `true` or `false`, nothing else.
QueryFlag = Annotated[bool, BeforeValidator(_json_boolean)]

# --- filters: the shape of what they filter ---------------------------------------------

RegionFilter = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"),
    AfterValidator(str.lower),
    Field(description="A region code, e.g. `east` (case-insensitive)."),
]
PhoneFilter = Annotated[
    Phone, Field(description="A full phone number (digits, optional leading +, spaces or -).")
]
NetworkIdFilter = Annotated[NetworkId, Field(description="A network member's id.")]
LocationFilter = Annotated[LocationId, Field(description="A stock location id.")]
PartNumberFilter = Annotated[PartNumber, Field(description="A part number, e.g. MOTOR-WM700.")]
ProductLineFilter = Annotated[ProductLine, AfterValidator(check_text)]
TextFilter = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def ticket_id_text(value: UUID | None) -> str | None:
    """A ticket id filter as stored (ticket ids are UUIDs in their canonical form)."""
    return str(value) if value is not None else None


# A ticket number (the id part of the compliance pages' cursor): Ticketline's own
# (``TL-20261122-000123``) or an imported one, which is the replaced system's (any text up
# to 32 characters: ``OLD-2025-000101``).
TicketNumber = Annotated[
    str, StringConstraints(min_length=1, max_length=32), AfterValidator(check_text)
]


def keyset_cursor(ident: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """The ``cursor`` parameter of a list paged by keyset (shared/readmodels/paging.py): a
    cursor this service issued — its time in range, its id one ``ident`` reads (raising
    ValueError on an id the list never pages by) —, checked before the query runs; any
    other text is 422 naming ``cursor``."""

    def page_cursor(
        cursor: str | None = Query(
            default=None,
            max_length=200,
            description="The next page: the cursor of the previous page's "
            '`Link: <…>; rel="next"` header (and, where the page is an object, its '
            "`next_cursor`).",
        ),
    ) -> str | None:
        if cursor is not None:
            at, last = decode_cursor(cursor)
            check_time("cursor", at)
            try:
                ident(last)
            except ValueError:
                raise InvalidCommand("cursor", NOT_ISSUED) from None
        return cursor

    return page_cursor


def check_time(name: str, value: datetime) -> datetime:
    """``value`` (e.g. decoded from a cursor) as a UTC time in range, or 422 naming ``name``."""
    if value.tzinfo is None:
        raise InvalidCommand(name, NOT_ISSUED)
    try:
        return _utc(value)
    except ValueError as exc:
        raise InvalidCommand(name, str(exc)) from None


def wants_csv(request: Request, format: str | None) -> bool:
    """``format`` when given, else what the caller prefers: ``Accept: text/csv`` with a
    weight above 0, above every other type it names and no lower than a wildcard's
    (JSON otherwise)."""
    if format is not None:
        return format == "csv"
    weights: dict[str, float] = {}
    for media_range in request.headers.get("accept", "").split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        kind = kind.lower()
        weights[kind] = max(weight, weights.get(kind, 0.0))
    csv = min(weights.pop("text/csv", 0.0), 1.0)
    named = [w for kind, w in weights.items() if kind and "*" not in kind]
    wildcards = [w for kind, w in weights.items() if "*" in kind]
    # Named types at the same weight leave JSON, the default; a wildcard only above it.
    return csv > 0 and csv > max(named, default=0.0) and csv >= max(wildcards, default=0.0)

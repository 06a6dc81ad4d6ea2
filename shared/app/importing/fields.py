# mypy: disable-error-code="func-returns-value"
# (``return self.problem(...)``: record the problem, and the value is None.)
"""One input row's values, read as the types a kind needs, collecting problems instead of
raising: a row reports every wrong field at once (line, field, problem)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.kernel.calendar import iana_zone, unknown_zone
from shared.kernel.clock import EARLIEST_BUSINESS_DAY
from shared.kernel.errors import DomainError, InvalidCommand
from shared.kernel.events.tickets import ISO_DAY as _ISO_DAY
from shared.kernel.patterns import error_message
from shared.kernel.text import invalid_text_reason, legacy_line_breaks

E = TypeVar("E", bound=StrEnum)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_OFFSET = re.compile(r"[+-][0-9]{2}:?(?P<minutes>[0-9]{2})(:?(?P<seconds>[0-9]{2})(\.[0-9]+)?)?$")
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


@dataclass(frozen=True)
class Column:
    """A column of a kind's format (a CSV header name, a JSON Lines key)."""

    name: str
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Problem:
    """One line of the error report."""

    line: int
    field: str
    problem: str


class RowFailed(Exception):
    """A decision refused the row: its problems."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.problem}" for p in problems))


def problems_of(
    exc: Exception, line: int, field: str, fields: Mapping[str, str] | None = None
) -> list[Problem]:
    """A decision's or a payload's error as report lines. ``field``: the column the
    decision was about; ``fields``: payload or command field names (or a rule the decision
    may name, e.g. ``parent_level``) → columns."""
    names = fields or {}
    if isinstance(exc, ValidationError):
        out = []
        for error in exc.errors():
            loc = ".".join(str(x) for x in error["loc"])
            column = names.get(loc) or names.get(str(error["loc"][0]) if error["loc"] else "")
            out.append(Problem(line, column or field, f"{loc}: {error['msg']}"))
        return out
    if isinstance(exc, InvalidCommand):
        return [Problem(line, names.get(exc.field, field), exc.detail)]
    if isinstance(exc, DomainError):
        return [Problem(line, names.get(exc.rule, field), f"{exc.rule}: {exc.detail}")]
    raise exc


@dataclass
class Fields:
    """Typed access to one row. ``values``: column → value as read (CSV: text, empty =
    missing; JSON Lines: any JSON value, null = missing). ``zone``: the time zone of
    timestamps written without an offset (None: such a timestamp is a problem)."""

    line: int
    values: Mapping[str, Any]
    zone: ZoneInfo | None = None
    problems: list[Problem] = field(default_factory=list)

    def problem(self, column: str, text: str) -> None:
        self.problems.append(Problem(self.line, column, text))

    def given(self, column: str) -> bool:
        return self._raw(column) is not None

    def given_without(self, step: str, columns: tuple[str, ...]) -> None:
        """Each of ``columns`` given with ``step`` (the step's time) left blank is a problem;
        a ``step`` given but refused is its own problem, not theirs too."""
        if not self.given(step):
            for column in columns:
                if self.given(column):
                    self.problem(column, f"given without {step}")

    def _raw(self, column: str) -> Any:
        """The value as given (text stripped), None when missing or blank."""
        value = self.values.get(column)
        if type(value) is str:
            return value.strip() or None
        return value

    def _missing(self, column: str, required: bool) -> None:
        if required:
            self.problem(column, "required")

    def text(self, column: str, *, required: bool = False, max_length: int = 4000) -> str | None:
        value = self._raw(column)
        if value is None:
            return self._missing(column, required)
        if not isinstance(value, str):
            value = str(value) if isinstance(value, int | float) else None
            if value is None:
                return self.problem(column, "expected text")
        value = legacy_line_breaks(value)
        reason = invalid_text_reason(value)
        if reason is not None:
            return self.problem(column, reason)
        if len(value) > max_length:
            return self.problem(column, f"longer than {max_length} characters")
        return value

    def identifier(
        self,
        column: str,
        adapter: TypeAdapter[str],
        *,
        max_length: int,
        allowed: str,
        required: bool = False,
    ) -> str | None:
        """Text the API's id type accepts (``adapter``), or the row's problem saying what
        is ``allowed``."""
        value = self.text(column, required=required, max_length=max_length)
        if value is None:
            return None
        try:
            return adapter.validate_python(value)
        except ValidationError:
            return self.problem(column, f"{allowed} only (up to {max_length})")

    def _parsed(
        self, column: str, required: bool, parse: Callable[[Any], T], what: str
    ) -> T | None:
        value = self._raw(column)
        if value is None:
            return self._missing(column, required)
        try:
            return parse(value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            shown = str(value)[:40]
            # The calendar's own words where the form was right (2025-02-30: "day is out
            # of range for month"); the parsers' other messages only repeat the value.
            said = f" ({exc})" if "out of range" in str(exc) else ""
            return self.problem(column, f"{what} expected, got {shown!r}{said}")

    def integer(
        self,
        column: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._parsed(column, required, _integer, "a whole number")
        if value is not None and minimum is not None and value < minimum:
            return self.problem(column, f"at least {minimum}")
        if value is not None and maximum is not None and value > maximum:
            return self.problem(column, f"at most {maximum}")
        return value

    def number(
        self, column: str, *, required: bool = False, minimum: float | None = None
    ) -> float | None:
        value = self._parsed(column, required, _number, "a number")
        if value is not None and minimum is not None and value < minimum:
            return self.problem(column, f"at least {minimum}")
        return value

    def boolean(self, column: str, *, required: bool = False) -> bool | None:
        return self._parsed(column, required, _boolean, "true or false")

    def choice(self, column: str, enum: type[E], *, required: bool = False) -> E | None:
        value = self._raw(column)
        if value is None:
            return self._missing(column, required)
        try:
            return enum(str(value).lower())
        except ValueError:
            allowed = ", ".join(e.value for e in enum)
            return self.problem(column, f"one of {allowed}; got {str(value)[:40]!r}")

    def day(self, column: str, *, required: bool = False) -> date | None:
        return self._parsed(column, required, _day, "a date (YYYY-MM-DD, 1950 or later)")

    def month(self, column: str, *, required: bool = False) -> str | None:
        return self._parsed(column, required, _month, "a month (YYYY-MM, 1950 or later)")

    def timestamp(self, column: str, *, required: bool = False) -> datetime | None:
        value = self._parsed(column, required, _timestamp, "an ISO 8601 time (1950 or later)")
        if value is None:
            return None
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        if self.zone is None:
            return self.problem(
                column,
                "a time needs its UTC offset (e.g. 2025-03-01T09:30:00+08:00 or …Z), "
                "or import with --timezone",
            )
        local = value.replace(tzinfo=self.zone)
        if local.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) != value:
            return self.problem(  # a clock moved forward past it: a typo, or another zone
                column,
                f"{value.isoformat()} never happened in {self.zone.key} (the clocks moved "
                "forward over it): give the time with its UTC offset",
            )
        # In UTC: arithmetic on a named zone's time is on its wall clock (a deadline 24 h
        # after a time before a clock change would land an hour off).
        return local.astimezone(UTC)

    def timezone(self, column: str, *, required: bool = False) -> str | None:
        name = self.text(column, required=required, max_length=64)
        if name is None:
            return None
        if iana_zone(name) is None:
            return self.problem(column, unknown_zone(name))
        return name

    def items(self, column: str, *, separator: str = ";") -> list[str]:
        """A list: ``a;b;c`` in CSV, a JSON array of strings in JSON Lines."""
        value = self._raw(column)
        if value is None:
            return []
        parts = value if isinstance(value, list) else str(value).split(separator)
        out = []
        for part in parts:
            text = legacy_line_breaks(str(part)).strip()
            reason = invalid_text_reason(text)
            if reason is not None:
                self.problem(column, reason)
            elif text:
                out.append(text)
        return out

    def model(
        self, cls: type[M], columns: Mapping[str, str], *, within: str | None = None, **values: Any
    ) -> M | None:
        """A payload part from several columns (``columns``: its field → column), each
        validation error reported against its column; ``within``: the one column the whole
        part comes from (its rules across fields are that column's too)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            known = {p.field for p in self.problems}  # already said (e.g. "required")
            for error in exc.errors():
                loc = str(error["loc"][0]) if error["loc"] else ""
                column = columns.get(loc) or within or loc or "(row)"
                if column not in known:
                    self.problem(column, error_message(error))
            return None


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("not whole")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(str(value)) from exc
    if not number.is_finite():
        raise ValueError("not finite")
    return float(number)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


# History of appliances in service: before 1950 a date is a typo (a year 1 or 0202); past
# 9000, deadlines computed from it would leave the calendar (the API refuses both too).
_YEARS = range(EARLIEST_BUSINESS_DAY.year, 9000)


def _plausible_year(year: int, text: str) -> None:
    if year not in _YEARS:
        raise ValueError(text)


def _day(value: Any) -> date:
    # date.fromisoformat also reads 20260301 and 2026-W09-7; the API takes YYYY-MM-DD only.
    text = str(value)
    if not _ISO_DAY.fullmatch(text):
        raise ValueError(text)
    day = date.fromisoformat(text)
    _plausible_year(day.year, text)
    return day


def _month(value: Any) -> str:
    text = str(value)
    if not _MONTH.match(text):
        raise ValueError(text)
    _plausible_year(int(text[:4]), text)
    return text


def _timestamp(value: Any) -> datetime:
    text = str(value)
    if len(text) < 16 or text[4] != "-" or text[7] != "-":
        raise ValueError(text)  # a date alone (or less) is not a moment
    moment = datetime.fromisoformat(text)
    offset = _OFFSET.search(text)
    if offset and max(int(offset["minutes"]), int(offset["seconds"] or 0)) > 59:
        raise ValueError(text)  # fromisoformat reads +08:99 as +09:39
    _plausible_year(moment.year, text)
    return moment

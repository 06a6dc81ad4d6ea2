"""Business time: working intervals per weekday in a calendar's timezone, holidays and
adjusted working days; how much business time lies between two instants, and the instant
a given amount of business time after another. Pure.

Durations are ``timedelta`` (exact to the microsecond), so a 24×7 calendar gives exactly
the wall-clock arithmetic: ``add(start, hours)`` is ``start + hours``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.kernel.errors import InvalidCommand
from shared.kernel.events.network import WEEKDAYS
from shared.kernel.events.sla import ALWAYS_ID, CalendarDescription, WorkingHours

DAY_MINUTES = 24 * 60
ZERO = timedelta(0)
DEFAULT_HORIZON = timedelta(days=366)

# Minutes of the day [start, end), sorted and not overlapping, per weekday (0 = Monday).
Week = tuple[tuple[tuple[int, int], ...], ...]


@dataclass(frozen=True)
class Calendar:
    """A calendar version, ready for arithmetic. ``zone`` None: 24×7 (every instant is
    business time)."""

    id: str
    version: int = 0
    zone: ZoneInfo | None = None
    week: Week = ((),) * 7
    holidays: frozenset[date] = frozenset()
    # An adjusted working day → the weekday whose hours it has.
    working_days: Mapping[date, int] = field(default_factory=dict)
    name: str = "24x7"

    @property
    def always(self) -> bool:
        return self.zone is None

    def day_spans(self, day: date) -> tuple[tuple[int, int], ...]:
        if day in self.holidays:
            return ()
        return self.week[self.working_days.get(day, day.weekday())]

    def spans(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The working intervals (UTC) overlapping [start, end), in order, clipped."""
        if self.always:
            if end > start:
                yield start, end
            return
        for s, e in self.spans_from(start, end):
            if s >= end:
                return
            yield max(s, start), min(e, end)

    def spans_from(self, start: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals ending after ``start``, in order, up to the local day after
        ``until`` (unclipped)."""
        assert self.zone is not None
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        last = until.astimezone(self.zone).date() + timedelta(days=1)
        while day <= last:
            for s, e in self.day_spans(day):
                begin, finish = self._instant(day, s), self._instant(day, e)
                if finish > start:
                    yield begin, finish
            day += timedelta(days=1)

    def _instant(self, day: date, minute: int) -> datetime:
        assert self.zone is not None
        if minute >= DAY_MINUTES:
            day, minute = day + timedelta(days=1), minute - DAY_MINUTES
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
        return local.astimezone(UTC)


ALWAYS = Calendar(id=ALWAYS_ID)


def business_between(calendar: Calendar, start: datetime, end: datetime) -> timedelta:
    """Business time in [start, end) (zero when end is not after start)."""
    if end <= start:
        return ZERO
    if calendar.always:
        return end - start
    total = ZERO
    for s, e in calendar.spans(start, end):
        total += e - s
    return total


def add_business(
    calendar: Calendar, start: datetime, amount: timedelta, horizon: timedelta = DEFAULT_HORIZON
) -> datetime | None:
    """The instant at which ``amount`` of business time has passed since ``start`` (the
    end of a working interval when it runs out exactly there); None when that is more
    than ``horizon`` after ``start`` (unreachable: the caller caps and says so)."""
    if amount <= ZERO:
        return start
    if calendar.always:
        return start + amount if amount <= horizon else None
    remaining = amount
    limit = start + horizon
    for s, e in calendar.spans_from(start, limit):
        begin = max(s, start)
        if begin > limit:
            return None
        if e - begin >= remaining:
            found = begin + remaining
            return found if found <= limit else None
        remaining -= e - begin
    return None


# --- building a calendar from its description (validation: 422 naming the field) -------


# Files of the zone database that are no place's zone: the host's own (its clocks would
# move with the machine's setting), the fallback rules, "Factory" (no offset on purpose).
_NOT_A_PLACE = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_A_PLACE


def iana_zone(name: str) -> ZoneInfo | None:
    """The IANA timezone of this name (``Asia/Shanghai``, ``UTC``), or None — also for a
    file of the zone database that is no place's zone (``localtime``, ``posix/…``)."""
    if name not in _iana_names():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def unknown_zone(name: str) -> str:
    """What a setting or an import says of a name ``iana_zone`` does not know."""
    return f"unknown time zone {name!r} (an IANA name, e.g. Asia/Shanghai)"


def zone_of(name: str, field_name: str = "timezone") -> ZoneInfo:
    zone = iana_zone(name)
    if zone is None:
        raise InvalidCommand(field_name, f"unknown timezone {name!r}")
    return zone


def _minutes(value: time) -> int:
    return value.hour * 60 + value.minute


def _pieces(hours: WorkingHours) -> list[tuple[int, int, int]]:
    """(weekday, start minute, end minute) pieces; across midnight split in two."""
    day = WEEKDAYS.index(hours.weekday)
    start, end = _minutes(hours.start), _minutes(hours.end)
    if end > start:
        return [(day, start, end)]
    pieces = [(day, start, DAY_MINUTES)]
    if end > 0:
        pieces.append(((day + 1) % 7, 0, end))
    return pieces


def _label(day: int, span: tuple[int, int]) -> str:
    def hhmm(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    return f"{WEEKDAYS[day].value} {hhmm(span[0])}-{hhmm(span[1])}"


def build_week(hours: list[WorkingHours]) -> Week:
    """Per weekday, the intervals sorted, touching ones merged; overlaps are refused."""
    days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for item in hours:
        if item.start.second or item.end.second or item.start.microsecond:
            raise InvalidCommand("hours", "working hours are whole minutes")
        for day, s, e in _pieces(item):
            days[day].append((s, e))
    week: list[tuple[tuple[int, int], ...]] = []
    for day, spans in enumerate(days):
        merged: list[tuple[int, int]] = []
        for span in sorted(spans):
            if merged and span[0] < merged[-1][1]:
                raise InvalidCommand(
                    "hours",
                    f"overlapping working hours: {_label(day, merged[-1])} and {_label(day, span)}",
                )
            if merged and span[0] == merged[-1][1]:
                merged[-1] = (merged[-1][0], span[1])
            else:
                merged.append(span)
        week.append(tuple(merged))
    if not any(week):
        raise InvalidCommand("hours", "a calendar needs working hours")
    return tuple(week)


# Days a calendar may name (holidays, adjusted working days).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2199, 12, 31)


def check_day(field_name: str, day: date) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidCommand(field_name, f"{day}: a day between {FIRST_DAY} and {LAST_DAY}")
    return day


def build_calendar(calendar_id: str, version: int, d: CalendarDescription) -> Calendar:
    zone = zone_of(d.timezone)
    week = build_week(d.hours)
    holidays = frozenset(check_day("holidays", h.day) for h in d.holidays)
    working: dict[date, int] = {}
    for w in d.working_days:
        check_day("working_days", w.day)
        if w.day in holidays:
            raise InvalidCommand("working_days", f"{w.day} is both a holiday and a working day")
        weekday = WEEKDAYS.index(w.hours_of)
        if not week[weekday]:
            raise InvalidCommand(
                "working_days", f"{w.day} works the hours of {w.hours_of.value}, which has none"
            )
        working[w.day] = weekday
    return Calendar(calendar_id, version, zone, week, holidays, working, d.name)


def longest_closed_run(calendar: Calendar, since: date) -> tuple[date, int]:
    """The longest run of consecutive days without working time from ``since`` to a week
    after the last holiday listed: (its first day, its length in days)."""
    last = max([*calendar.holidays, since]) + timedelta(days=8)
    best: tuple[date, int] = (since, 0)
    run_start: date | None = None
    day = since
    while day <= last:
        if calendar.day_spans(day):
            run_start = None
        else:
            run_start = run_start or day
            length = (day - run_start).days + 1
            if length > best[1]:
                best = (run_start, length)
        day += timedelta(days=1)
    return best


def check_reachable(calendar: Calendar, today: date, horizon: timedelta) -> None:
    """A holiday list that closes the calendar for longer than the horizon makes every
    deadline in that stretch unreachable: refused."""
    first, days = longest_closed_run(calendar, today)
    if days >= horizon.days:
        raise InvalidCommand(
            "holidays",
            f"no working time for {days} days from {first}: deadlines there would be "
            f"unreachable within the {horizon.days}-day horizon",
        )

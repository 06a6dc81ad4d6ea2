"""Injectable clocks: production reads the system clock, tests move time by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Protocol

# The easternmost time zones are 14 hours ahead of UTC (Kiribati's Line Islands).
EASTERNMOST_OFFSET = timedelta(hours=14)
WESTERNMOST_OFFSET = timedelta(hours=-12)
# Before it, a calendar date a caller gives (a purchase, a scorecard incident) is a typo
# (a year 1 or 0202), not a fact about a product in service.
EARLIEST_BUSINESS_DAY = date(1950, 1, 1)


def latest_today(now: datetime) -> date:
    """The latest date it is anywhere at ``now``: a calendar date a caller gives (a
    purchase, a scorecard incident) is in the future only after it — 1 a.m. in Hangzhou
    is still yesterday in UTC."""
    return dates_anywhere(now)[1]


def dates_anywhere(now: datetime) -> tuple[date, date]:
    """The earliest and the latest date it is anywhere at ``now`` (UTC−12 to UTC+14)."""
    utc = now.astimezone(UTC)
    return (utc + WESTERNMOST_OFFSET).date(), (utc + EASTERNMOST_OFFSET).date()


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **kwargs: float) -> datetime:
        self._now += timedelta(**kwargs)
        return self._now

    def set(self, value: datetime) -> None:
        self._now = value


def iso_utc(value: datetime) -> str:
    """A time as the API writes it: ISO 8601 in UTC with ``Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

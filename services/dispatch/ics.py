"""Holidays from an iCalendar file (RFC 5545): a small reader of all-day ``VEVENT``s.

Reads ``DTSTART;VALUE=DATE`` (and a bare ``YYYYMMDD``), ``DTEND`` (exclusive) or
``DURATION:P<n>D``, ``SUMMARY`` and ``CATEGORIES``; unfolds continued lines and
unescapes text. Each day of an event is a holiday, unless the event marks an adjusted
working day: ``CATEGORIES`` containing ``WORKDAY`` (or ``WORKING-DAY``), or a summary
naming one (``补班``, ``上班``, ``working day``, ``workday``) — the form public-holiday
feeds use for a weekend day worked in exchange. Timed events and recurring ones
(``RRULE``, ``RDATE``) are not holidays: they are counted as skipped. A file that ends
inside an event or before ``END:VCALENDAR`` (cut off) is refused. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import ValidationError

from shared.kernel.calendar import check_day
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.network import Weekday
from shared.kernel.events.sla import AdjustedWorkingDay, CalendarDescription, Holiday

WORKING_DAY_WORDS = ("补班", "上班", "working day", "workday")
WORKING_DAY_CATEGORIES = frozenset({"WORKDAY", "WORKING-DAY", "WORKING DAY"})
MAX_EVENT_DAYS = 366


@dataclass
class Imported:
    holidays: list[Holiday] = field(default_factory=list)
    working_days: list[AdjustedWorkingDay] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def unfold(text: str) -> list[str]:
    """Content lines: a line starting with a space or a tab continues the previous one."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw.strip():
            lines.append(raw)
    return lines


def unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def split_line(line: str) -> tuple[str, dict[str, str], str]:
    """``NAME;PARAM=V:value`` → (NAME, {PARAM: V}, value)."""
    head, _, value = line.partition(":")
    name, *params = head.split(";")
    found = {}
    for p in params:
        key, _, v = p.partition("=")
        found[key.upper()] = v.strip('"').upper()
    return name.upper(), found, value.strip()


def parse_day(value: str, params: dict[str, str]) -> date | None:
    """An all-day date; None for a date-time (a timed event)."""
    if params.get("VALUE") == "DATE-TIME" or "T" in value:
        return None
    try:
        day = datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        raise InvalidCommand("ics", f"not an iCalendar date: {value[:40]!r}") from None
    return check_day("ics", day)


def _days(props: dict[str, tuple[dict[str, str], str]]) -> list[date] | None:
    if "DTSTART" not in props or "RRULE" in props or "RDATE" in props:
        return None
    start = parse_day(props["DTSTART"][1], props["DTSTART"][0])
    if start is None:
        return None
    end = start + timedelta(days=1)
    if "DTEND" in props:
        end = parse_day(props["DTEND"][1], props["DTEND"][0]) or end
    elif "DURATION" in props:
        match = re.fullmatch(r"P(\d{1,9})D", props["DURATION"][1])
        if match is None:  # hours or minutes: a timed event, however it starts
            return None
        days = int(match.group(1))
        if days > MAX_EVENT_DAYS:  # before the sum: a date far enough out overflows
            raise InvalidCommand("ics", f"an event from {start} lasts {days} days")
        end = start + timedelta(days=days)
    count = (end - start).days
    if count < 1 or count > MAX_EVENT_DAYS:
        raise InvalidCommand("ics", f"an event from {start} lasts {count} days")
    return [start + timedelta(days=n) for n in range(count)]


def _is_working_day(props: dict[str, tuple[dict[str, str], str]]) -> bool:
    categories = {c.strip().upper() for c in props.get("CATEGORIES", ({}, ""))[1].split(",")}
    summary = unescape(props.get("SUMMARY", ({}, ""))[1]).lower()
    return bool(categories & WORKING_DAY_CATEGORIES) or any(w in summary for w in WORKING_DAY_WORDS)


def events(lines: list[str]) -> list[dict[str, tuple[dict[str, str], str]]]:
    found: list[dict[str, tuple[dict[str, str], str]]] = []
    current: dict[str, tuple[dict[str, str], str]] | None = None
    for line in lines:
        name, params, value = split_line(line)
        if name == "BEGIN" and value.upper() == "VEVENT":
            current = {}
        elif name == "END" and value.upper() == "VEVENT" and current is not None:
            found.append(current)
            current = None
        elif current is not None and name not in current:
            current[name] = (params, value)
    if current is not None:
        raise InvalidCommand("ics", "the file ends inside an event (no END:VEVENT): cut off?")
    return found


def parse(text: str, hours_of: Weekday = Weekday.mon) -> Imported:
    lines = unfold(text)
    first = split_line(lines[0]) if lines else ("", {}, "")
    if (first[0], first[2].upper()) != ("BEGIN", "VCALENDAR"):
        raise InvalidCommand("ics", "not an iCalendar file (BEGIN:VCALENDAR expected)")
    found = events(lines)
    last, _, value = split_line(lines[-1])
    if (last, value.upper()) != ("END", "VCALENDAR"):
        raise InvalidCommand("ics", "the file does not end with END:VCALENDAR: cut off?")
    out = Imported()
    for props in found:
        summary = unescape(props.get("SUMMARY", ({}, ""))[1]).strip()[:200] or None
        days = _days(props)
        if days is None:
            out.skipped.append(summary or props.get("UID", ({}, "?"))[1])
            continue
        if _is_working_day(props):
            out.working_days += [
                AdjustedWorkingDay(day=d, hours_of=hours_of, name=summary) for d in days
            ]
        else:
            out.holidays += [Holiday(day=d, name=summary) for d in days]
    return out


def merged(current: CalendarDescription, imported: Imported, replace: bool) -> CalendarDescription:
    """The calendar with the imported days: added to (the file wins on a day it names,
    keeping the day's name when the file gives none) or instead of its holidays and
    adjusted working days."""
    named = {h.day for h in imported.holidays} | {w.day for w in imported.working_days}
    known = {h.day: h.name for h in current.holidays if h.name}
    known.update((w.day, w.name) for w in current.working_days if w.name)
    holidays = {} if replace else {h.day: h for h in current.holidays if h.day not in named}
    working = {} if replace else {w.day: w for w in current.working_days if w.day not in named}
    keep = {} if replace else known
    holidays.update(
        (h.day, h if h.name or h.day not in keep else Holiday(day=h.day, name=keep[h.day]))
        for h in imported.holidays
    )
    working.update(
        (w.day, w if w.name or w.day not in keep else w.model_copy(update={"name": keep[w.day]}))
        for w in imported.working_days
    )
    data = current.model_dump()
    data["holidays"] = [h.model_dump() for _, h in sorted(holidays.items())]
    data["working_days"] = [w.model_dump() for _, w in sorted(working.items())]
    try:
        return CalendarDescription.model_validate(data)
    except ValidationError as exc:
        raise InvalidCommand("ics", exc.errors()[0]["msg"]) from None

"""Service network events (DOMAIN.md, "Three-level service network").

Stream types ``service_point`` (headquarters, regional centers, service points) and
``technician``; the stream id is the network member's id. Updates carry the member's full
new description, so each event alone says what the member looked like from then on.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.tickets import LongText, RegionCode, ShortText
from shared.kernel.patterns import worded
from shared.kernel.personal import is_stored_context

NetworkId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$",
            "an id: up to 100 letters, digits, _ . @ or -, starting with a letter or digit",
        ),
    ),
]
Postcode = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[A-Za-z0-9][A-Za-z0-9 -]{0,19}$",
            "a postcode prefix: up to 20 letters, digits, spaces or dashes",
        ),
    ),
]
ProductLine = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=200)
]
TimezoneName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(r"^[A-Za-z0-9_+\-/]{1,64}$", "a time zone's IANA name, e.g. Asia/Shanghai"),
    ),
]


def _local_time(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> time:
    if is_stored_context(info.context):  # as recorded: a fold never refuses history
        return cast(time, handler(value))
    if not isinstance(value, (str, time)):
        raise ValueError("a local time as text, HH:MM or HH:MM:SS")
    parsed = cast(time, handler(value))
    if parsed.tzinfo is not None:
        raise ValueError("a local time has no offset: its timezone is the one given beside it")
    if parsed.microsecond:
        raise ValueError("a local time is HH:MM or HH:MM:SS, no fraction of a second")
    return parsed


# A time of day in the timezone given beside it (a technician's, a calendar's).
LocalTime = Annotated[time, WrapValidator(_local_time)]


class NetworkLevel(StrEnum):
    headquarters = "headquarters"
    regional_center = "regional_center"
    service_point = "service_point"


class ServicePointKind(StrEnum):
    own_outlet = "own_outlet"
    dealer = "dealer"


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS: tuple[Weekday, ...] = tuple(Weekday)


class Shift(BaseModel):
    """One working period on a weekday, local time of the technician's timezone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: Weekday
    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _ordered(self) -> Shift:
        if self.end <= self.start:
            raise ValueError("a shift must end after it starts (split overnight shifts in two)")
        return self


_SERVICE_POINT = "service_point"
_TECHNICIAN = "technician"


class ServicePointDescription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ShortText
    level: NetworkLevel
    kind: ServicePointKind | None = None
    parent_id: NetworkId | None = None
    region: RegionCode | None = None
    postcodes: list[Postcode] = Field(
        default_factory=list,
        max_length=500,
        description="Postcode prefixes covered within the region; empty = the whole region.",
    )
    address: ShortText | None = None
    active: StrictBool = True


class ServicePointRegistered(
    ServicePointDescription,
    EventPayload,
    event_type="ServicePointRegistered",
    stream_type=_SERVICE_POINT,
):
    pass


class ServicePointUpdated(
    ServicePointDescription,
    EventPayload,
    event_type="ServicePointUpdated",
    stream_type=_SERVICE_POINT,
):
    reason: ShortText | None = None


class TechnicianDescription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ShortText
    service_point_id: NetworkId
    skills: list[ProductLine] = Field(
        default_factory=list, max_length=100, description="Product lines the technician repairs."
    )
    working_hours: list[Shift] = Field(default_factory=list, max_length=50)
    timezone: TimezoneName = "UTC"


class TechnicianRegistered(
    TechnicianDescription,
    EventPayload,
    event_type="TechnicianRegistered",
    stream_type=_TECHNICIAN,
):
    pass


class TechnicianUpdated(
    TechnicianDescription, EventPayload, event_type="TechnicianUpdated", stream_type=_TECHNICIAN
):
    reason: ShortText | None = None


class TechnicianDeactivated(
    EventPayload, event_type="TechnicianDeactivated", stream_type=_TECHNICIAN
):
    reason: LongText


class TechnicianReactivated(
    EventPayload, event_type="TechnicianReactivated", stream_type=_TECHNICIAN
):
    reason: LongText


def normalise_postcode(value: str) -> str:
    return re.sub(r"[\s-]", "", value).upper()

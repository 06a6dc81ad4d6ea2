"""Quality feedback and scorecard events (feedback service).

``QualityAlertRaised`` lives on a ``quality`` stream per (product model, fault category,
day), so that the same alert can never be recorded twice. Manual scorecard items live on
a ``scorecard`` stream per service point.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.tickets import CalendarDay, FaultCategory, LongText, RegionCode, ShortText


class QualityAlertRaised(EventPayload, event_type="QualityAlertRaised", stream_type="quality"):
    """Repairs of one product model for one fault category reached the daily threshold."""

    product_model: ShortText
    fault_category: FaultCategory
    day: CalendarDay
    count: int = Field(ge=1)
    threshold: int = Field(ge=1)
    ticket_ids: list[ShortText] = Field(default_factory=list)


class ScorecardItemKind(StrEnum):
    poor_service = "poor_service"
    falsified_records = "falsified_records"
    positive_media_coverage = "positive_media_coverage"


class ScorecardItemRecorded(
    EventPayload, event_type="ScorecardItemRecorded", stream_type="scorecard"
):
    """A scorecard item entered by hand (admin or auditor), with its evidence."""

    service_point_id: ShortText
    region: RegionCode | None = None
    item: ScorecardItemKind
    occurred_on: CalendarDay
    evidence: LongText
    ticket_ids: list[ShortText] = Field(default_factory=list, max_length=100)

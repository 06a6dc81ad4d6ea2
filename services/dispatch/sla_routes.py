"""The SLA clock over HTTP (docs/sla.md): calendars and policies (admin), pausing and
resuming a ticket's clock, its timeline (``?as_of=``), and the what-if report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from services.dispatch import commands, read_models, sla_domain
from services.dispatch.routes import ticket_accepted
from services.dispatch.schemas import TicketAccepted
from services.dispatch.sla_schemas import (
    CalendarRequest,
    HolidaysImported,
    IcsImportRequest,
    PauseRequest,
    PolicyRequest,
    ReevaluateRequest,
    ResumeRequest,
    SlaDeadlineView,
    SlaPolicyRef,
    SlaSegmentView,
    SlaStepView,
    SlaTimeline,
    TermsAccepted,
    TermsItem,
    TermsPage,
    TermsVersion,
    WhatIfRequest,
)
from shared.app.executor import Outcome
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow
from shared.http.headers import etag
from shared.http.idempotency import CommandResponse
from shared.http.params import StreamVersion, UtcTime
from shared.http.problems import PROBLEM_RESPONSES
from shared.kernel.errors import NotFound
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.sla import ALWAYS_ID, DefinableCalendarId, TermsId
from shared.kernel.numbers import rounded
from shared.kernel.reach import Scope
from shared.kernel.sla import DeadlineClock, SlaClock, calendar_stream, policy_stream
from shared.kernel.ticket import TicketState
from shared.readmodels.sla import TermsReader, ticket_clock
from shared.readmodels.sla_whatif import candidate, clocks_at, what_if
from shared.readmodels.ticket_state import current_scope

SERVICE = "dispatch"
router = APIRouter(tags=["sla"], responses=PROBLEM_RESPONSES)


Manage = Annotated[CommandCall, Depends(command_call(SERVICE, "admin", scope="sla:write"))]
Pause = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "dispatcher", "technician", "admin", scope="tickets:write")),
]
Reevaluate = Annotated[
    CommandCall, Depends(command_call(SERVICE, "dispatcher", "admin", scope="tickets:write"))
]
may_read = allow("admin", "dispatcher", "regional_center", "auditor", scope="sla:read")
may_read_ticket = allow(
    "admin", "dispatcher", "regional_center", "auditor", "technician", scope="tickets:read"
)
KINDS = {"calendar": calendar_stream, "sla_policy": policy_stream}


def terms_accepted(
    result: Outcome[sla_domain.TermsStream],
    answer: type[TermsAccepted] = TermsAccepted,
    **extra: Any,
) -> CommandResponse:
    view = answer(
        id=sla_domain.terms_id(result.after.stream_id),
        version=result.after.version,
        events=[str(e.event_id) for e in result.events],
        **extra,
    )
    return CommandResponse(200, view.model_dump(mode="json"))


# --- calendars and policies ----------------------------------------------------------------


@router.put(
    "/calendars/{calendar_id}",
    response_model=TermsAccepted,
    summary="Define a calendar's new version (event CalendarDefined)",
    description="Working hours per weekday in the calendar's timezone (several intervals a "
    "day; an end at or before the start crosses midnight and is split), holidays and "
    "adjusted working days. Overlapping hours, an unknown timezone or a holiday list that "
    "closes the calendar for longer than the horizon: 422, nothing written. The same "
    "description again records nothing: 200, the current version, `events: []`.",
)
async def define_calendar(
    calendar_id: DefinableCalendarId, body: CalendarRequest, call: Manage
) -> JSONResponse:
    description = body.description()
    return await call.run(
        f"define_calendar:{calendar_id}",
        body,
        lambda c: terms_accepted(
            commands.define_calendar(c, call.handling, calendar_id, description, body.reason)
        ),
    )


@router.post(
    "/calendars/{calendar_id}/ics",
    response_model=HolidaysImported,
    summary="Import holidays from an iCalendar file (a new calendar version)",
    description="All-day VEVENTs become holidays; one whose CATEGORIES say WORKDAY (or "
    "whose summary names a working day, e.g. 补班) an adjusted working day. Timed and "
    "recurring events are skipped and listed.",
)
async def import_ics(
    calendar_id: DefinableCalendarId, body: IcsImportRequest, call: Manage
) -> JSONResponse:
    def work(c: Connection) -> CommandResponse:
        result, imported = commands.import_calendar(
            c, call.handling, calendar_id, body.ics, body.replace, body.hours_of
        )
        return terms_accepted(
            result,
            HolidaysImported,
            holidays_imported=len(imported.holidays),
            working_days_imported=len(imported.working_days),
            skipped=imported.skipped,
        )

    return await call.run(f"import_calendar:{calendar_id}", body, work)


@router.put(
    "/sla-policies/{policy_id}",
    response_model=TermsAccepted,
    summary="Define an SLA policy's new version (event SlaPolicyDefined)",
    description="Targets per urgency (response) and complexity (resolution), which calendar "
    'each runs on ("24x7", "local" = the mapped calendar of the ticket\'s service point or '
    "region, or a calendar id), the warning and escalation ladder, the pause reasons. New "
    "tickets start under the latest version of the policy `TICKETLINE_SLA_POLICY_ID` names; "
    "tickets keep theirs. The same description again records nothing: 200, the current "
    "version, `events: []`.",
)
async def define_policy(policy_id: TermsId, body: PolicyRequest, call: Manage) -> JSONResponse:
    description = body.description()
    return await call.run(
        f"define_policy:{policy_id}",
        body,
        lambda c: terms_accepted(
            commands.define_policy(c, call.handling, policy_id, description, body.reason)
        ),
    )


def _terms_page(kind: str) -> Any:
    async def listing(
        _principal: Principal = Depends(may_read), platform: Platform = Depends(get_platform)
    ) -> TermsPage:
        rows = await platform.db.read(lambda c: read_models.list_terms(c, kind))
        return TermsPage(items=[TermsItem(**dict(r._mapping)) for r in rows])

    return listing


router.get("/calendars", response_model=TermsPage, summary="Calendars (latest versions)")(
    _terms_page("calendar")
)
router.get("/sla-policies", response_model=TermsPage, summary="SLA policies (latest versions)")(
    _terms_page("sla_policy")
)


async def _terms_version(
    platform: Platform, kind: str, terms_id: str, version: int | None, response: Response
) -> TermsVersion:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, KINDS[kind](terms_id)))
    if version is None:
        event = events[-1] if events else None
    else:
        event = next((e for e in events if e.stream_version == version), None)
    if event is None:
        named = f"{kind.replace('_', ' ')} {terms_id}"
        if events:  # it exists: only that version does not
            latest = events[-1].stream_version
            raise NotFound(
                f"{kind}_not_found", f"{named} has no version {version} (latest {latest})"
            )
        raise NotFound(f"{kind}_not_found", f"no {named}")
    response.headers["ETag"] = etag(events[-1].stream_version)
    return TermsVersion(
        id=terms_id,
        version=event.stream_version,
        description=event.payload,
        defined_at=event.occurred_at,
        actor=event.actor.model_dump(),
    )


@router.get("/calendars/{calendar_id}", response_model=TermsVersion, summary="A calendar's version")
async def get_calendar(
    calendar_id: TermsId,
    response: Response,
    version: StreamVersion | None = Query(default=None, description="Default: the latest."),
    _principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> TermsVersion:
    if calendar_id == ALWAYS_ID:
        raise NotFound(
            "calendar_not_found",
            "24x7 is built in (every instant is business time): it has no stored versions",
        )
    return await _terms_version(platform, "calendar", calendar_id, version, response)


@router.get(
    "/sla-policies/{policy_id}", response_model=TermsVersion, summary="An SLA policy's version"
)
async def get_policy(
    policy_id: TermsId,
    response: Response,
    version: StreamVersion | None = Query(default=None, description="Default: the latest."),
    _principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> TermsVersion:
    return await _terms_version(platform, "sla_policy", policy_id, version, response)


# --- a ticket's clock --------------------------------------------------------------------


@router.post(
    "/tickets/{ticket_id}/sla/pause",
    response_model=TicketAccepted,
    summary="Pause the ticket's SLA clocks (event SlaPaused)",
    description="With a reason from the ticket's policy. A paused clock is never flagged; "
    "its deadlines move by the business time it stays paused. 409 `already_paused`, "
    "`no_clock_running` (response and resolution met), `ticket_closed`.",
)
async def pause(ticket_id: UUID, body: PauseRequest, call: Pause) -> JSONResponse:
    return await call.run(
        f"sla_pause:{ticket_id}",
        body,
        lambda c: ticket_accepted(
            commands.pause(c, call.handling, str(ticket_id), body.reason, body.note)
        ),
    )


@router.post(
    "/tickets/{ticket_id}/sla/resume",
    response_model=TicketAccepted,
    summary="Resume the ticket's SLA clocks (event SlaResumed, with the moved deadlines)",
    description="409 `not_paused` when the clock runs.",
)
async def resume(ticket_id: UUID, body: ResumeRequest, call: Pause) -> JSONResponse:
    return await call.run(
        f"sla_resume:{ticket_id}",
        body,
        lambda c: ticket_accepted(commands.resume(c, call.handling, str(ticket_id), body.note)),
    )


@router.post(
    "/tickets/{ticket_id}/sla/re-evaluation",
    response_model=TicketAccepted,
    summary="Move the ticket to the policy in force (event SlaPolicyApplied)",
    description="On purpose only: a ticket otherwise keeps the policy and calendar versions "
    "it started under. 409 `no_policy`, `already_current`.",
)
async def reevaluate(ticket_id: UUID, body: ReevaluateRequest, call: Reevaluate) -> JSONResponse:
    return await call.run(
        f"sla_reevaluate:{ticket_id}",
        body,
        lambda c: ticket_accepted(
            commands.reevaluate(c, call.handling, str(ticket_id), body.reason)
        ),
    )


def _minutes(value: timedelta) -> float:
    return rounded(value.total_seconds() / 60)


def deadline_view(d: DeadlineClock) -> SlaDeadlineView:
    return SlaDeadlineView(
        deadline=d.deadline,
        status=d.status,
        calendar_id=d.calendar_id,
        calendar_version=d.calendar_version,
        target_minutes=_minutes(d.target),
        elapsed_minutes=_minutes(d.elapsed),
        paused_minutes=_minutes(d.paused),
        remaining_minutes=_minutes(d.remaining),
        started_at=d.started_at,
        due_at=d.due_at,
        capped=d.capped,
        met_at=d.met_at,
        steps=[
            SlaStepView(
                percent=t.percent, level=t.level, at=t.at, reached=t.reached, recorded=t.recorded
            )
            for t in d.thresholds
        ],
    )


def pause_actors(events: list[EventEnvelope]) -> list[list[str | None]]:
    """Per pause, in order: who paused it and who ended it (a resume or the repair)."""
    found: list[list[str | None]] = []
    open_pause: list[str | None] | None = None
    for e in events:
        who = f"{e.actor.role}:{e.actor.subject}"
        if e.event_type == "SlaPaused":
            open_pause = [who, None]
            found.append(open_pause)
        elif e.event_type in ("SlaResumed", "TicketRepaired") and open_pause is not None:
            open_pause[1], open_pause = who, None
    return found


def timeline(
    state: TicketState, clock: SlaClock, events: list[EventEnvelope], as_of: datetime | None
) -> SlaTimeline:
    actors = iter(pause_actors(events))
    segments = []
    for s in clock.segments:
        who = next(actors, [None, None]) if s.state == "paused" else [None, None]
        segments.append(
            SlaSegmentView(
                state=s.state,
                start=s.start,
                end=s.end,
                minutes=_minutes((s.end or clock.at) - s.start),
                reason=s.reason,
                note=s.note,
                requisition_id=s.requisition_id,
                ended_by=s.ended_by,
                paused_by=who[0],
                resumed_by=who[1],
            )
        )
    pin = state.sla_policy
    return SlaTimeline(
        ticket_id=state.ticket_id,
        at=clock.at,
        as_of=as_of,
        policy=SlaPolicyRef(**pin.model_dump(exclude={"reason"})) if pin else None,
        paused=clock.paused,
        pause_reason=clock.pause_reason,
        paused_minutes=rounded(sum(s.minutes for s in segments if s.state == "paused")),
        segments=segments,
        deadlines=[deadline_view(d) for d in clock.deadlines],
    )


@router.get(
    "/tickets/{ticket_id}/sla",
    response_model=SlaTimeline,
    summary="The ticket's SLA clocks: segments, deadlines, ladder steps (`as_of` for the past)",
    description="The one clock the SLA job, the compliance view and the scorecards use. "
    "`as_of`: the clock as it stood then, from the events recorded by then.",
)
async def sla_timeline(
    ticket_id: UUID,
    as_of: UtcTime | None = Query(default=None, description="ISO 8601 with a timezone."),
    principal: Principal = Depends(may_read_ticket),
    platform: Platform = Depends(get_platform),
) -> SlaTimeline:
    now = platform.clock.now()
    at = min(as_of, now) if as_of is not None else now  # the clock as it stood, not ahead
    sla = platform.settings.sla

    def work(c: Connection) -> tuple[Any, list[EventEnvelope], Scope | None]:
        reader = TermsReader.configured(c, platform.store, sla)
        found = ticket_clock(reader, str(ticket_id), at, as_of=as_of)
        events = platform.store.read_stream(c, str(ticket_id), recorded_until=as_of)
        return found, events, current_scope(c, str(ticket_id))

    found, events, now_at = await platform.db.read(work)
    # Reach by where the ticket is now (as the ticket's own ?as_of=): not where it was then.
    if found is None or now_at is None or not principal.reach.allows(now_at):
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    return timeline(found[0], found[1], events, as_of)


# --- what-if -------------------------------------------------------------------------------


@router.post(
    "/sla/what-if",
    summary="Recompute a period's tickets under another policy: rates side by side",
    description="Every ticket received in `[received_from, received_to)`, its clocks at "
    "`at` (now) on the terms it runs on and on the policy (and calendars) given: "
    "compliance and breach rates per region and service point, and the difference. Writes "
    "nothing. A period of more than `TICKETLINE_SLA_WHAT_IF_MAX_TICKETS` tickets (10,000) "
    "is 422 `received_to` (the CLI `ticketline sla what-if` has no limit). A token with a "
    "region recomputes that region's tickets only.",
)
async def sla_what_if(
    body: WhatIfRequest,
    principal: Principal = Depends(allow("admin", scope="sla:read")),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    chosen = candidate(body.policy.description(), body.calendars)
    at = clocks_at(body.at, platform.clock.now())
    sla = platform.settings.sla

    def work(c: Connection) -> dict[str, Any]:
        reader = TermsReader.configured(c, platform.store, sla)
        period = (body.received_from, body.received_to)
        return what_if(
            reader,
            chosen,
            period,
            at,
            max_tickets=sla.what_if_max_tickets,
            region=principal.reach.region,
        )

    return await platform.db.read(work)

"""The console's pages. Thin: authorize, read through ``queries``, shape for a template."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import BeforeValidator

from services.console import queries
from services.console.auth import (
    CONSOLE_SCOPE,
    COOKIE,
    LOCALE_COOKIE,
    may_open,
    require_console_role,
    session_alive,
    signed_in,
    signed_in_for,
    verify,
)
from services.console.i18n import LOCALES, translator
from services.feedback.compliance import ITEMS
from services.feedback.read_models import (
    ComplianceFilters,
    Tally,
    band,
    merged,
    summarise_tally,
    tallies,
)
from shared.app.platform import Platform
from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.verify import StreamChain, stream_chain
from shared.http.app import get_platform
from shared.http.audit import AUDIT_ROLES
from shared.http.auth.tokens import InvalidCredentials, TokenExpired
from shared.http.context import Principal
from shared.http.disclosure import Disclosure, open_rows
from shared.http.params import (
    MAX_POSITION,
    IsoMonth,
    IsoWeek,
    NetworkIdFilter,
    Position,
    RegionFilter,
    parse_ascii_uint,
)
from shared.http.streams import STOPPING_SSE, UNAVAILABLE_SSE, server_stopping, sse_response
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.reach import Reach, Scope

# A page's cursor as the console writes it (queries.encode_cursor): value|ticket id.
CURSOR_PATTERN = r"^[^|]+\|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _blank_is_all(value: object) -> object:
    return None if value == "" else value


# The filters' forms send "" for "all"; any other value has the APIs' shape (else 400,
# naming it: a malformed filter is never dropped).
FormRegion = Annotated[RegionFilter | None, BeforeValidator(_blank_is_all)]
FormServicePoint = Annotated[NetworkIdFilter | None, BeforeValidator(_blank_is_all)]
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
# ``tojson`` escapes <, >, & and ' (data inside a <script> element cannot close it); keys
# keep their order (the charts' series follow the legend's).
templates.env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}


def code_spans(text: str) -> Markup:
    """The text escaped, its `backticked` parts as <code> (a command in a help line)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


templates.env.filters["code_spans"] = code_spans

PAGE_SIZE = 50
COLUMN_SIZE = 8
# The live page's table keeps its newest rows only (a page left open all day).
LIVE_ROWS_KEPT = 200
# The console's own content only; htmx styles nothing inline (meta config in base.html).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)


# --- rendering --------------------------------------------------------------------------


def locale_of(request: Request) -> str:
    chosen = request.cookies.get(LOCALE_COOKIE)
    if chosen in LOCALES:
        return chosen  # type: ignore[return-value]
    return str(request.app.state.platform.settings.console_locale)


def page_of(request: Request) -> str:
    """The page asked for: its path and query."""
    return path_and_query(request.url.path, request.url.query)


def path_and_query(path: str, query: str) -> str:
    return path + (f"?{query}" if query else "")


# The navigation's pages, each with what its API asks (as its route's dependency): the
# viewer gets a link only to what they may open.
NAV_PAGES: tuple[tuple[str, str, str, frozenset[str] | None], ...] = (
    ("board", "/board", CONSOLE_SCOPE, None),
    ("sla", "/sla", CONSOLE_SCOPE, None),
    ("compliance", "/compliance", "reports:read", None),
    ("quality", "/quality", "reports:read", None),
    ("live", "/live", "events:read", None),
    ("audit", "/audit", "audit:export", AUDIT_ROLES),
)


def nav_for(viewer: Principal | None) -> list[tuple[str, str]]:
    if viewer is None:
        return []
    return [(key, href) for key, href, scope, roles in NAV_PAGES if may_open(viewer, scope, roles)]


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    locale = locale_of(request)
    here = page_of(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": translator(locale),
            "locale": locale,
            "other_locale": "en" if locale == "zh" else "zh",
            "here": here,
            "path": request.url.path,
            "fmt_time": fmt_time,
            "nav": nav_for(context.get("viewer")),
            **context,
        },
        status_code=status_code,
    )
    response.headers["Content-Security-Policy"] = CSP
    return response


def sign_in_page(
    request: Request,
    *,
    status_code: int = 200,
    reason: str | None = None,
    error: str = "",
    next_page: str | None = None,
) -> HTMLResponse:
    """``next_page``: where signing in leads (the page that asked for it), else the
    query's ``next``, else the board."""
    return render(
        request,
        "sign_in.html",
        status_code=status_code,
        viewer=None,
        reason=reason,
        error=error,
        next=safe_next(next_page or request.query_params.get("next")),
    )


def safe_next(target: str | None) -> str:
    """Only a path on this console (no scheme, no host, no '//')."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/board"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/board"
    return target


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_left(delta: timedelta, locale: str) -> str:
    """``2h 15m`` / ``1d 4h`` / ``35m``; negative: overdue."""
    seconds = int(delta.total_seconds())
    minutes = abs(seconds) // 60
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if locale == "zh":
        units = ("天", "小时", "分钟")
        text = (
            f"{days}{units[0]}{hours}{units[1]}"
            if days
            else f"{hours}{units[1]}{mins}{units[2]}"
            if hours
            else f"{mins}{units[2]}"
        )
        return f"超时 {text}" if seconds < 0 else text
    text = f"{days}d {hours}h" if days else f"{hours}h {mins}m" if hours else f"{mins}m"
    return f"{text} overdue" if seconds < 0 else text


@dataclass
class Card:
    """A ticket on the board or in an SLA list, with its running deadline and risk."""

    row: Any
    due: datetime | None
    left: str
    risk: str  # breached | high | medium | low | paused | none


def card(row: Any, now: datetime, locale: str) -> Card:
    """The deadline running in the ticket's status, as its SLA clock has it (moved by
    pauses; none while paused — unless it breached before the pause), else as recorded
    on the events. The risk is the share of the window left, the window being the
    recorded one (the target, without pauses)."""
    m = row._mapping
    if m["status"] in queries.AWAITING_RESPONSE:
        recorded, moved, start = m["response_due_at"], m["clock_response_due_at"], m["created_at"]
    elif m["status"] in queries.AWAITING_RESOLUTION:
        recorded, moved = m["resolution_due_at"], m["clock_resolution_due_at"]
        start = m["diagnosed_at"] or m["created_at"]
    else:
        return Card(row, None, "—", "none")
    if m["sla_paused"]:
        kind = "response" if m["status"] in queries.AWAITING_RESPONSE else "resolution"
        if m[f"sla_{kind}_status"] != "breached" or recorded is None:
            return Card(row, None, "—", "paused")
        moved = None  # breached before the pause, which undoes nothing: as recorded
    due = moved or recorded
    if due is None:
        return Card(row, None, "—", "none")
    left = due - now
    window = max(((recorded or due) - start).total_seconds(), 1.0)
    share = left.total_seconds() / window
    risk = (
        "breached" if share < 0 else "high" if share < 0.25 else "medium" if share < 0.5 else "low"
    )
    return Card(row, due, fmt_left(left, locale), risk)


def _personal(row: Any) -> dict[str, Any]:
    """The ticket row's personal columns (sealed, as stored), to open."""
    m = row._mapping
    return {
        k: m[k]
        for k in ("ticket_id", "customer_id", "customer_name", "customer_phone", "address_line")
    }


# --- sign-in, sign-out, language --------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home() -> Response:
    return RedirectResponse("/board", status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> HTMLResponse:
    # An htmx request whose sign-in expired is sent here with reason=expired.
    expired = request.query_params.get("reason") == "expired"
    return sign_in_page(request, reason="expired" if expired else None)


def same_origin(request: Request) -> bool:
    """Form posts must come from a page of this console (no cross-site sign-in). Browsers
    say where a request comes from in Sec-Fetch-Site; the pages send no referrer, so a
    browser's Origin may be "null" and only a real origin is compared."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True  # not a browser (no Sec-Fetch-Site): nothing to forge
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    if token[:7].lower() == "bearer ":  # pasted with its header's word
        token = token[7:].strip()
    target = safe_next((form.get("next") or [None])[0])
    locale = locale_of(request)
    t = translator(locale)
    if not same_origin(request):
        return sign_in_page(request, status_code=403, error=t("sign_in_elsewhere"))
    try:
        principal, expires = verify(request, token)
    except TokenExpired:
        return sign_in_page(request, status_code=401, reason="expired", next_page=target)
    except InvalidCredentials as exc:
        # The verifier's reason is English (a library's words): shown on the English page.
        error = t("token_missing") if not token else t("token_invalid")
        if token and locale != "zh":
            error += f": {str(exc).removeprefix('invalid token: ')}"
        return sign_in_page(request, status_code=401, error=error, next_page=target)
    if time.time() >= expires:  # within the API's leeway for clocks, but no session left
        return sign_in_page(request, status_code=401, reason="expired", next_page=target)
    require_console_role(principal)  # 403 page for other roles; no cookie set
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        # A day past the token's expiry: a page opened after it finds an expired token and
        # says so (a cookie gone with the token is a visitor never signed in).
        max_age=max(1, expires - int(time.time())) + EXPIRED_NOTICE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


# How long the browser keeps the cookie past the token's expiry (for the notice only: an
# expired token opens nothing, and it is dropped when first refused).
EXPIRED_NOTICE_SECONDS = 86400


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    if not same_origin(request):  # another site cannot sign the operator out either
        t = translator(locale_of(request))
        return sign_in_page(request, status_code=403, error=t("sign_out_elsewhere"))
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/session")
async def session(principal: Principal = Depends(signed_in)) -> Response:
    """204 while the sign-in holds; the sign-in page (HX-Redirect for htmx) once not."""
    return Response(status_code=204)


@router.get("/locale")
async def set_locale(request: Request, to: str = Query(default="zh"), next: str = "/") -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if to in LOCALES:
        response.set_cookie(
            LOCALE_COOKIE, to, max_age=365 * 86400, path="/", samesite="strict", httponly=True
        )
    return response


# --- board ------------------------------------------------------------------------------


@dataclass
class BoardView:
    filters: queries.BoardFilters
    visible: bool
    asked_region: str | None
    counts: dict[str, int] = field(default_factory=dict)
    columns: list[tuple[str, list[Card], str | None]] = field(default_factory=list)


def listed_region(scope: Reach, asked: str | None) -> tuple[str | None, bool]:
    """``Reach.list_region`` for a page's ``region`` (any case: the APIs' region filter
    lower-cases it too)."""
    return scope.list_region(asked.lower() if asked else None)


async def board_view(
    platform: Platform,
    principal: Principal,
    locale: str,
    region: str | None,
    service_point: str | None,
    urgency: str | None,
    status: str | None,
    after: str | None,
) -> BoardView:
    scope = principal.reach
    forced, visible = listed_region(scope, region)
    filters = queries.BoardFilters(
        region=forced, service_point_id=service_point or None, urgency=urgency or None
    )
    view = BoardView(filters, visible, region)
    if not visible:
        view.counts = {s: 0 for s in queries.OPEN_STATUSES}
        return view
    statuses = [status] if status else list(queries.OPEN_STATUSES)
    size = PAGE_SIZE if status else COLUMN_SIZE
    now = platform.clock.now()

    def read(conn: Any) -> None:
        view.counts = queries.board_counts(conn, filters)
        for s in statuses:
            rows, cursor = queries.board_page(conn, filters, s, after if status else None, size)
            view.columns.append((s, [card(r, now, locale) for r in rows], cursor))

    await queries.read(platform, read)
    return view


async def choices(platform: Platform, principal: Principal, region: str | None) -> dict[str, Any]:
    scope = principal.reach
    return await queries.read(
        platform,
        lambda conn: {
            "regions": queries.regions(conn, scope),
            "service_points": queries.service_point_choices(conn, scope.region or region),
        },
    )


@router.get("/board", response_class=HTMLResponse)
async def board(
    request: Request,
    region: FormRegion = None,
    service_point: FormServicePoint = None,
    urgency: Literal["normal", "urgent", "critical", ""] | None = None,
    status: Literal[queries.OPEN_STATUSES] | None = None,  # type: ignore[valid-type]
    after: str | None = Query(default=None, pattern=CURSOR_PATTERN, max_length=200),
    principal: Principal = Depends(signed_in),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    locale = locale_of(request)
    view = await board_view(
        platform, principal, locale, region, service_point, urgency, status, after
    )
    head = await queries.read(platform, queries.ledger_head)
    query = urlencode({k: v for k, v in request.query_params.items() if k not in ("after",) and v})
    return render(
        request,
        "board.html",
        viewer=principal,
        view=view,
        status=status,
        urgency=urgency or "",
        service_point=service_point or "",
        region=region or "",
        choices=await choices(platform, principal, region),
        head=head,
        query=query,
    )


@router.get("/board/columns", response_class=HTMLResponse)
async def board_columns(
    request: Request,
    region: FormRegion = None,
    service_point: FormServicePoint = None,
    urgency: Literal["normal", "urgent", "critical", ""] | None = None,
    status: Literal[queries.OPEN_STATUSES] | None = None,  # type: ignore[valid-type]
    principal: Principal = Depends(signed_in),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    """The board's columns alone: what the page swaps in when an event arrives."""
    view = await board_view(
        platform, principal, locale_of(request), region, service_point, urgency, status, None
    )
    return render(
        request,
        "board_columns.html",
        viewer=principal,
        view=view,
        status=status,
        query=urlencode({k: v for k, v in request.query_params.items() if v}),
    )


# --- one ticket -------------------------------------------------------------------------


def ticket_timeline(
    checked: list[tuple[Any, str]],
    opened: list[Any],
    disclosure: Disclosure,
    customer_id: str | None,
    chain: StreamChain,
) -> list[dict[str, Any]]:
    """The ticket's events with hash-chain status (on the stored form) and payloads as the
    viewer may see them (opened, masked by role)."""
    timeline = []
    for (e, _), clear, ok in zip(checked, opened, chain.ok, strict=True):
        payload = disclosure.payload(clear, customer_id, e.stream_id)
        timeline.append(
            {
                "event": e,
                "hash_ok": ok,
                "payload": json.dumps(payload, ensure_ascii=False, indent=1, sort_keys=True),
            }
        )
    return timeline


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
async def ticket_page(
    request: Request,
    ticket_id: str,
    principal: Principal = Depends(signed_in),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    try:  # as the APIs read a ticket id: any case, with or without dashes
        ticket_id = str(UUID(ticket_id)) if len(ticket_id) <= 45 else ""
    except ValueError:
        ticket_id = ""
    if not ticket_id:
        raise NotFound("ticket_not_found", "no such ticket")
    row = await queries.read(platform, lambda conn: queries.ticket(conn, ticket_id))
    if row is None:
        raise NotFound("ticket_not_found", "no such ticket")
    # Another region's ticket (or, for a technician, another's) does not exist here.
    if not principal.reach.allows(Scope(region=row.region, assignee=row.technician_id)):
        raise NotFound("ticket_not_found", "no such ticket")

    # The checklist is the compliance API's (GET /compliance/tickets/{id}): its scope too.
    reports = principal.has_scope("reports:read")

    def read(conn: Any) -> tuple[Any, Any, Any, Any, Any]:
        checked = platform.store.read_stream_checked(conn, ticket_id)
        return (
            checked,
            platform.store.open(conn, [e for e, _ in checked]),
            open_rows(conn, platform, [_personal(row)])[0],
            queries.ticket_compliance(conn, ticket_id) if reports else None,
            queries.ticket_flag_row(conn, ticket_id),
        )

    checked, opened, personal, compliance, flags = await queries.read(platform, read)
    disclosure = Disclosure(request, principal)
    personal = disclosure.row(personal)
    chain = stream_chain(checked, row.version)
    timeline = ticket_timeline(checked, opened, disclosure, personal["customer_id"], chain)
    disclosure.record()
    checklist = json.loads(compliance.checklist) if compliance is not None else None
    locale = locale_of(request)
    return render(
        request,
        "ticket.html",
        viewer=principal,
        ticket=row,
        card=card(row, platform.clock.now(), locale),
        customer_name=personal["customer_name"],
        phone=personal["customer_phone"],
        address_line=personal["address_line"],
        timeline=timeline,
        chain_valid=chain.valid,
        chain_problems=chain.problems,
        compliance=compliance,
        checklist=checklist,
        show_checklist=reports,
        items=(*ITEMS, "first_time_fix"),
        flags=flags,
    )


# --- SLA risk ---------------------------------------------------------------------------


@router.get("/sla", response_class=HTMLResponse)
async def sla(
    request: Request,
    region: FormRegion = None,
    kind: Literal["response", "resolution"] = "response",
    state: Literal["breached", "at_risk"] = "breached",
    after: str | None = Query(default=None, pattern=CURSOR_PATTERN, max_length=200),
    principal: Principal = Depends(signed_in),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    scope = principal.reach
    forced, visible = listed_region(scope, region)
    now = platform.clock.now()
    locale = locale_of(request)

    def read(conn: Any) -> tuple[Any, list[Any], str | None]:
        summary = queries.sla_summary(conn, scope, now, now + timedelta(hours=4))
        if not visible:
            return summary, [], None
        rows, cursor = queries.sla_page(conn, scope, forced, kind, state, now, after, PAGE_SIZE)
        return summary, rows, cursor

    summary, rows, cursor = await queries.read(platform, read)
    query = urlencode({k: v for k, v in request.query_params.items() if k != "after" and v})
    return render(
        request,
        "sla.html",
        viewer=principal,
        summary=sorted(summary.items()),
        cards=[card(r, now, locale) for r in rows],
        cursor=cursor,
        kind=kind,
        state=state,
        region=region or "",
        regions=await queries.read(platform, lambda conn: queries.regions(conn, scope)),
        query=query,
    )


# --- compliance and satisfaction -------------------------------------------------------

RATES = (
    ("compliance_rate", "compliance"),
    ("sla_attainment", "sla"),
    ("first_time_fix_rate", "first_time_fix"),
    ("nps", "detractors"),
    ("complaint_rate", "complaints"),
)


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


def months_back(month: str, count: int) -> list[str]:
    year, number = (int(x) for x in month.split("-"))
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{number:02d}")
        number -= 1
        if number == 0:
            year, number = year - 1, 12
    return list(reversed(out))


@router.get("/compliance", response_class=HTMLResponse)
async def compliance(
    request: Request,
    month: IsoMonth | None = Query(default=None),
    group_by: Literal["region", "service_point", "technician", "month"] = "region",
    region: FormRegion = None,
    principal: Principal = Depends(signed_in_for("reports:read")),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    scope = principal.reach
    forced, visible = listed_region(scope, region)
    month = month or month_of(platform.clock.now().date())
    # By month: the six months up to the chosen one; otherwise the chosen month.
    months = months_back(month, 6) if group_by == "month" else [month]
    filters = ComplianceFilters(region=forced, months=tuple(months))
    counted = (
        await queries.read(platform, lambda conn: tallies(conn, filters, group_by))
        if visible
        else {}
    )
    settings = platform.settings.feedback
    keys = months if group_by == "month" else sorted(counted, key=lambda k: (k is None, k or ""))
    summaries = [summarise_tally(key, counted.get(key) or Tally(), settings) for key in keys]
    total = summarise_tally(None, merged(counted.values()), settings)
    chart = {
        "labels": [s["key"] or "—" for s in summaries],
        "series": {name: [s[name] for s in summaries] for name, _ in RATES},
        "bands": {
            b: [s["bands"][b] for s in summaries]
            for b in ("very_satisfied", "satisfied", "neutral", "dissatisfied")
        },
    }
    return render(
        request,
        "compliance.html",
        viewer=principal,
        month=month,
        group_by=group_by,
        region=region or "",
        regions=await queries.read(platform, lambda conn: queries.regions(conn, scope)),
        summaries=summaries,
        total=total,
        rates=RATES,
        chart=chart,
        band=band,
    )


@router.get("/compliance/tickets", response_class=HTMLResponse)
async def compliance_tickets(
    request: Request,
    month: IsoMonth | None = Query(default=None),
    rate: Literal[tuple(queries.RATE_FILTERS)] = "compliance",  # type: ignore[valid-type]
    region: FormRegion = None,
    service_point: FormServicePoint = None,
    technician: FormServicePoint = None,  # (a network id's form, as a service point's)
    # It pages by ticket number, any an import accepted ("WO/2025/0049", "工单 0001").
    after: str | None = Query(default=None, min_length=1, max_length=64),
    principal: Principal = Depends(signed_in_for("reports:read")),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    scope = principal.reach
    forced, visible = listed_region(scope, region)
    month = month or month_of(platform.clock.now().date())  # as the compliance page
    rows, cursor = (
        await queries.read(
            platform,
            lambda conn: queries.compliance_ticket_page(
                conn,
                forced,
                month,
                service_point or None,
                rate,
                after,
                PAGE_SIZE,
                platform.settings.feedback,
                technician_id=technician or None,
            ),
        )
        if visible
        else ([], None)
    )
    query = urlencode({k: v for k, v in request.query_params.items() if k != "after" and v})
    return render(
        request,
        "compliance_tickets.html",
        viewer=principal,
        rows=rows,
        cursor=cursor,
        month=month,
        rate=rate,
        region=region or "",
        service_point=service_point or "",
        technician=technician or "",
        query=query,
    )


# --- quality ----------------------------------------------------------------------------


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def weekly_report(counts: list[Any], days: list[str]) -> list[dict[str, Any]]:
    """Repairs per model and fault category and day of the week, most repairs first."""
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for r in counts:
        table[(r.product_model, r.fault_category)][r.day] = int(r.repairs)
    return sorted(
        (
            {
                "product_model": model,
                "fault_category": category,
                "by_day": [by_day.get(d, 0) for d in days],
                "repairs": sum(by_day.values()),
            }
            for (model, category), by_day in table.items()
        ),
        key=lambda g: (-g["repairs"], g["product_model"]),
    )


def alerts_by_group(recent: list[Any]) -> list[dict[str, Any]]:
    """Alerts per model and fault category, the most alerted first."""
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for a in recent:
        grouped[(a.product_model, a.fault_category)].append(a)
    return sorted(
        (
            {
                "product_model": model,
                "fault_category": category,
                "alerts": len(items),
                "last_day": max(i.day for i in items),
            }
            for (model, category), items in grouped.items()
        ),
        key=lambda g: (-g["alerts"], g["product_model"]),
    )


@router.get("/quality", response_class=HTMLResponse)
async def quality(
    request: Request,
    week: IsoWeek | None = Query(default=None),
    principal: Principal = Depends(signed_in_for("reports:read")),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    # Quality alerts have no region (per model and fault category): every console role
    # sees them, as every reader of GET /quality/weekly does.
    week = week or iso_week(platform.clock.now().date())
    year, number = week.split("-W")
    try:  # the page also reads the 7 weeks before and links the weeks around it
        monday = date.fromisocalendar(int(year), int(number), 1)
        end = monday + timedelta(days=7)
        since = end - timedelta(weeks=8)
        previous, following = iso_week(monday - timedelta(days=7)), iso_week(end)
    except OverflowError:
        raise InvalidCommand("week", f"{week} is too near the calendar's edge") from None

    def read(conn: Any) -> tuple[list[Any], list[Any], list[Any]]:
        return (
            queries.quality_alert_rows(conn, monday.isoformat(), end.isoformat()),
            queries.repair_counts(conn, monday.isoformat(), end.isoformat()),
            queries.quality_alert_rows(conn, since.isoformat(), end.isoformat()),
        )

    alerts, counts, recent = await queries.read(platform, read)
    days = [(monday + timedelta(days=i)).isoformat() for i in range(7)]
    report = weekly_report(counts, days)
    by_group = alerts_by_group(recent)
    chart = {
        "labels": [f"{g['product_model']} / {g['fault_category']}" for g in by_group[:12]],
        "series": {"alerts": [g["alerts"] for g in by_group[:12]]},
    }
    return render(
        request,
        "quality.html",
        viewer=principal,
        week=week,
        previous=previous,
        following=following,
        days=days,
        alerts=alerts,
        report=report,
        by_group=by_group,
        threshold=platform.settings.feedback.quality_alert_threshold,
        chart=chart,
    )


# --- live -------------------------------------------------------------------------------


async def live_rows(platform: Platform, rows: list[Any]) -> list[dict[str, Any]]:
    ids = sorted({r.stream_id for r in rows if r.stream_type == "ticket"})
    numbers = await queries.read(platform, lambda conn: queries.ticket_numbers(conn, ids))
    return [{"row": r, "number": numbers.get(r.stream_id)} for r in rows]


@router.get("/live", response_class=HTMLResponse)
async def live(
    request: Request,
    principal: Principal = Depends(signed_in_for("events:read")),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    scope = principal.reach

    def read(conn: Any) -> tuple[list[Any], int]:
        return queries.recent_events(conn, scope, 50), queries.ledger_head(conn)

    rows, head = await queries.read(platform, read)
    return render(
        request,
        "live.html",
        viewer=principal,
        rows=await live_rows(platform, rows),
        head=head,
        keep_rows=LIVE_ROWS_KEPT,
    )


def _position_or_none(text: str | None) -> int | None:
    """A Last-Event-ID the page sent back (a position), or None for anything else (a
    stale or foreign header starts from the `after` asked for, as a new page would)."""
    if text is None:
        return None
    try:
        return parse_ascii_uint(text, maximum=MAX_POSITION)
    except ValueError:
        return None


def live_start(resumed: int | None, after: int | None, head: int) -> int:
    """Where the live stream starts: after the page's Last-Event-ID, else the ``after`` it
    asked for, else now — never past the ledger's end. A position from another ledger
    (one restored from an older backup) would wait in silence for positions the ledger
    has yet to reach, skipping every event up to them: the page shows what comes next."""
    position = resumed if resumed is not None else after if after is not None else head
    return min(position, head)


@router.get("/live/stream")
async def live_stream(
    request: Request,
    after: Position | None = Query(default=None),
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
    principal: Principal = Depends(signed_in_for("events:read")),
    platform: Platform = Depends(get_platform),
) -> StreamingResponse:
    """New events of the caller's scope as Server-Sent Events whose data is a rendered
    table row (htmx's SSE extension puts it on the page). Read from the ledger with the
    rules of intake's ``GET /streams/events``: a regional caller gets its region only."""
    scope = principal.reach
    head = await queries.read(platform, queries.ledger_head)
    position = live_start(_position_or_none(last_event_id), after, head)
    poll = max(platform.settings.projector_poll_seconds, 0.2)
    t = translator(locale_of(request))
    template = templates.env.get_template("live_row.html")

    async def generate() -> AsyncIterator[str]:
        nonlocal position
        yield f"retry: 2000\n: after {position}\n\n"
        quiet = time.monotonic()
        while not await request.is_disconnected():
            if server_stopping(request):
                yield STOPPING_SSE
                return
            if not session_alive(request):
                yield "event: signin\ndata: expired\n\n"
                # Held open while the page goes to the sign-in form: a stream the server
                # ends is an error in the browser (and a reconnect a refused request).
                for _ in range(60):  # 30 s at most
                    if await request.is_disconnected() or server_stopping(request):
                        break
                    await asyncio.sleep(0.5)
                return
            try:
                found = await queries.read(
                    platform,
                    lambda conn, after=position: queries.events_after(conn, scope, after, 100),
                )
            except DatabaseUnavailable:
                yield UNAVAILABLE_SSE
                return
            for item in await live_rows(platform, found):
                html = template.render(item=item, t=t, fmt_time=fmt_time).replace("\n", " ")
                yield f"id: {item['row'].position}\nevent: ticketline\ndata: {html}\n\n"
                position = item["row"].position
            if found:
                quiet = time.monotonic()
                continue
            if time.monotonic() - quiet > 15:
                yield ": heartbeat\n\n"
                quiet = time.monotonic()
            await asyncio.sleep(poll)

    return sse_response(generate())


# --- audit ------------------------------------------------------------------------------


@dataclass
class VerifyRun:
    scope: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None = None
    progress: queries.VerifyProgress | None = None
    error: str | None = None

    @property
    def ok(self) -> bool | None:
        if self.finished_at is None or self.progress is None:
            return None
        return self.error is None and not self.progress.broken


def verify_runs(request: Request) -> dict[str, VerifyRun]:
    state = request.app.state
    if not hasattr(state, "verify_runs"):
        state.verify_runs = {}
        state.verify_tasks = set()
    return state.verify_runs  # type: ignore[no-any-return]


async def run_verification(platform: Platform, run: VerifyRun) -> None:
    assert run.progress is not None
    progress = run.progress
    try:
        while True:
            more = await queries.read(platform, lambda conn: queries.verify_batch(conn, progress))
            if not more:
                break
            await asyncio.sleep(0)  # let pages be served between batches
    except Exception as exc:  # reported on the page; the next run starts afresh
        run.error = type(exc).__name__
    run.finished_at = platform.clock.now()


def audit_context(request: Request, principal: Principal) -> dict[str, Any]:
    key = principal.region or "*"
    return {"run": verify_runs(request).get(key), "scope_key": key}


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    principal: Principal = Depends(signed_in_for("audit:export", AUDIT_ROLES)),
    platform: Platform = Depends(get_platform),
) -> HTMLResponse:
    from shared.app.registry import all_handlers

    types = {name: p.stream_types for name, p in all_handlers(platform).items()}

    def read(conn: Any) -> tuple[list[dict[str, Any]], int, tuple[int, Any]]:
        return (
            queries.checkpoints(conn, types),
            queries.ledger_head(conn),
            queries.outbox_state(conn),
        )

    checkpoints, head, outbox = await queries.read(platform, read)
    return render(
        request,
        "audit.html",
        viewer=principal,
        checkpoints=checkpoints,
        head=head,
        outbox=outbox,
        uses_kafka=platform.settings.uses_kafka,
        **audit_context(request, principal),
    )


@router.get("/audit/verification", response_class=HTMLResponse)
async def verification_status(
    request: Request, principal: Principal = Depends(signed_in_for("audit:export", AUDIT_ROLES))
) -> HTMLResponse:
    return render(
        request, "verify_status.html", viewer=principal, **audit_context(request, principal)
    )


@router.post("/audit/verification", response_class=HTMLResponse)
async def start_verification(
    request: Request,
    principal: Principal = Depends(signed_in_for("audit:export", AUDIT_ROLES)),
    platform: Platform = Depends(get_platform),
) -> Response:
    """Run the verification of the caller's scope in this process (a read: nothing is
    written); the page polls for the result. One run per scope at a time."""
    if not same_origin(request):
        raise NotFound("page_not_found", "no such page")
    runs = verify_runs(request)
    key = principal.region or "*"
    current = runs.get(key)
    if current is None or current.finished_at is not None:
        run = VerifyRun(
            scope=key,
            started_by=principal.subject,
            started_at=platform.clock.now(),
            progress=queries.VerifyProgress(principal.region),
        )
        runs[key] = run
        task = asyncio.create_task(run_verification(platform, run))
        request.app.state.verify_tasks.add(task)
        task.add_done_callback(request.app.state.verify_tasks.discard)
    if request.headers.get("hx-request"):
        return render(
            request, "verify_status.html", viewer=principal, **audit_context(request, principal)
        )
    return RedirectResponse("/audit", status_code=303)

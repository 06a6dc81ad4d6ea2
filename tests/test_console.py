"""The operations console over HTTP (no browser): sign-in, who may use it, what each
caller sees, pagination, the verification, and that every query a page runs is served by
an index (EXPLAIN QUERY PLAN on SQLite). tests/test_console_browser.py drives it in
Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Select, func, select, text, update

from services.console import queries, routes
from services.console.auth import COOKIE, LOCALE_COOKIE
from services.console.i18n import LABELS
from services.console.queries import RATE_FILTERS
from services.dispatch.projections import SLA_CLOCKS
from services.dispatch.tables import sla_clocks as SLA_CLOCKS_TABLE
from shared.app.platform import Platform
from shared.app.registry import app_factory
from shared.eventstore.tables import events
from shared.kernel.clock import ManualClock
from tests.support.auth import token_for
from tests.support.lifecycle import Lifecycle, project_feedback
from tests.support.plans import explained, plan_problems, recorded_selects

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])

PAGES = ("/board", "/sla", "/compliance", "/quality", "/live", "/audit")


@asynccontextmanager
async def console_client(
    platform: Platform, role: str | None = "auditor", **claims: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the console, signed in through the sign-in form."""
    transport = httpx.ASGITransport(app=app_factory("console")(platform))
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        if role is not None:
            token = token_for(role, **claims)
            signed = await client.post("/sign-in", data={"token": token, "next": "/board"})
            assert signed.status_code == 303, signed.text
        yield client


async def open_tickets(life: Lifecycle, region: str, count: int, **kw: Any) -> list[str]:
    return [await life.open(region=region, **kw) for _ in range(count)]


@SQLITE
async def test_sign_in_sets_a_strict_http_only_cookie(platform: Platform) -> None:
    async with console_client(platform, role=None) as client:
        anonymous = await client.get("/board")
        assert anonymous.status_code == 401
        assert '<form method="post" action="/sign-in">' in anonymous.text
        assert (await client.get("/")).headers["location"] == "/board"
        form = await client.get("/sign-in")
        assert form.status_code == 200 and 'name="token"' in form.text
        assert "<code>ticketline token --role auditor" in form.text  # not `backticks`
        signed = await client.post(  # pasted with the header's word: taken as the token
            "/sign-in",
            data={"token": f"Bearer {token_for('auditor')}", "next": "https://evil.example/"},
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/board"  # never off-site
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        # Kept past the token's hour, so that a page opened after it says it expired.
        max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
        assert 3600 + 86400 - 60 < max_age <= 3600 + 86400, cookie
        board = await client.get("/board")
        assert board.status_code == 200
        assert "(审计, 全部区域)" in board.text or "(auditor, all regions)" in board.text
        assert board.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in board.headers["content-security-policy"]
        # Another site cannot sign the operator out (the cookie stays, so does the session).
        for elsewhere in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            forged = await client.post("/sign-out", headers=elsewhere)
            assert forged.status_code == 403 and "set-cookie" not in forged.headers
        assert (await client.get("/board")).status_code == 200
        out = await client.post("/sign-out")
        assert out.status_code == 303
        assert (await client.get("/board")).status_code == 401


@SQLITE
async def test_bad_tokens_and_roles(platform: Platform) -> None:
    async with console_client(platform, role=None) as client:
        wrong = await client.post("/sign-in", data={"token": "not-a-token"})
        assert wrong.status_code == 401 and 'role="alert"' in wrong.text
        assert "set-cookie" not in wrong.headers
        expired = token_for("auditor", ttl_seconds=-3600)
        assert (await client.post("/sign-in", data={"token": expired})).status_code == 401
        # No token, a garbled one: said in the page's language (no library's English).
        blank = await client.post("/sign-in", data={"token": ""})
        assert blank.status_code == 401 and "请粘贴您的令牌" in blank.text, blank.text
        garbled = await client.post("/sign-in", data={"token": "abc"})
        assert "令牌无效" in garbled.text and "segments" not in garbled.text
        client.cookies.set(LOCALE_COOKIE, "en")
        garbled = await client.post("/sign-in", data={"token": "abc"})
        assert "The token is not valid: Not enough segments" in garbled.text, garbled.text
        client.cookies.delete(LOCALE_COOKIE)
        # An expired cookie: the sign-in page (not an error dump), and the cookie goes.
        client.cookies.set(COOKIE, expired)
        page = await client.get("/board")
        assert page.status_code == 401
        assert 'action="/sign-in"' in page.text and "Traceback" not in page.text
        assert f"{COOKIE}=" in page.headers.get("set-cookie", "")
        fragment = await client.get("/board/columns", headers={"HX-Request": "true"})
        assert fragment.headers["hx-redirect"] == "/sign-in?reason=expired"
        assert fragment.status_code == 200
        # A page itself asked by htmx without HX-Current-URL: back to that page.
        client.cookies.set(COOKIE, expired)
        whole = await client.get("/board?region=east", headers={"HX-Request": "true"})
        assert (
            whole.headers["hx-redirect"] == "/sign-in?next=%2Fboard%3Fregion%3Deast&reason=expired"
        )
        client.cookies.set(COOKIE, expired)
        # From a page the session ended on: signing in leads back to that page.
        shown = {"HX-Request": "true", "HX-Current-URL": "http://console.test/board?region=east"}
        fragment = await client.get("/board/columns", headers=shown)
        back = fragment.headers["hx-redirect"]
        assert back == "/sign-in?next=%2Fboard%3Fregion%3Deast&reason=expired"
        client.cookies.clear()
        form = (await client.get(back)).text
        assert 'name="next" value="/board?region=east"' in form
        assert "sign-in expired" in form or "登录已过期" in form  # the notice, as on a page load
        client.cookies.set(COOKIE, expired)
        # Expired seconds ago (inside the verification's clock leeway): the session is
        # over, as the live stream says — /session sends the page to the sign-in form.
        client.cookies.set(COOKIE, token_for("auditor", ttl_seconds=-5))
        session = await client.get("/session", headers={"HX-Request": "true"})
        assert session.status_code == 200
        assert session.headers["hx-redirect"] == "/sign-in?reason=expired"
        # The cookie gone (the browser drops it a day after the token's expiry): a page's
        # part asking is a session that ended all the same.
        client.cookies.clear()
        gone = await client.get("/session", headers={"HX-Request": "true"})
        assert gone.headers["hx-redirect"] == "/sign-in?reason=expired"
        # The live stream reconnecting after the end keeps the cookie: the page's own
        # /session call (whichever comes first) still finds it expired and says so.
        client.cookies.set(COOKIE, expired)
        stream = await client.get("/live/stream", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 401 and "set-cookie" not in stream.headers
        # The same at sign-in: no cookie for a session already over, the expired notice.
        client.cookies.clear()
        late = await client.post("/sign-in", data={"token": token_for("auditor", ttl_seconds=-5)})
        assert late.status_code == 401 and "set-cookie" not in late.headers
        assert "sign-in expired" in late.text or "登录已过期" in late.text
        # A page asked for without a session: signing in leads back to it.
        asked = await client.get("/sla?kind=resolution&state=at_risk")
        assert asked.status_code == 401
        assert 'name="next" value="/sla?kind=resolution&amp;state=at_risk"' in asked.text
        cross_site = await client.post(
            "/sign-in",
            data={"token": token_for("auditor")},
            headers={"Origin": "https://evil.example"},
        )
        assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers
        from_elsewhere = await client.post(
            "/sign-in",
            data={"token": token_for("auditor")},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert from_elsewhere.status_code == 403 and "set-cookie" not in from_elsewhere.headers
    for role in ("call_center_agent", "technician", "customer_relations", "parts_clerk"):
        async with console_client(platform, role=None) as client:
            refused = await client.post("/sign-in", data={"token": token_for(role)})
            assert refused.status_code == 403, role
            assert "set-cookie" not in refused.headers
            # Not signed in: a way back to the form, no sign-out, no board.
            assert 'href="/sign-in"' in refused.text and 'action="/sign-out"' not in refused.text
            client.cookies.set(COOKIE, token_for(role))
            for page in PAGES:
                assert (await client.get(page)).status_code == 403, (role, page)
    async with console_client(platform, role=None) as client:
        limited = token_for("auditor", scopes=["audit:export"])
        assert (await client.post("/sign-in", data={"token": limited})).status_code == 403


@SQLITE
async def test_every_page_renders_for_every_console_role(platform: Platform, life: Lifecycle):
    east = await life.through_repair(region="east")
    await life.open(region="west", urgency="critical")
    await project_feedback(platform)
    for role, region in (
        ("auditor", None),
        ("admin", None),
        ("dispatcher", None),
        ("dispatcher", "east"),
        ("regional_center", "east"),
    ):
        async with console_client(platform, role, region=region) as client:
            for page in (*PAGES, f"/tickets/{east}", "/compliance?group_by=month"):
                response = await client.get(page)
                # The audit page is the audit export's readers' (GET /audit/export).
                expected = 403 if role == "dispatcher" and page == "/audit" else 200
                assert response.status_code == expected, (role, page, response.text[:500])
                assert "Traceback" not in response.text
                if expected == 200:
                    assert ('href="/audit"' in response.text) == (role != "dispatcher")
            if role == "dispatcher":
                refused = await client.post("/audit/verification")
                assert refused.status_code == 403
            for query in ("group_by=service_point", "month=2026-11"):
                assert (await client.get(f"/compliance?{query}")).status_code == 200
            assert (await client.get("/compliance?month=2026-13")).status_code == 400
            # Weeks of the pattern that are no week of their year: a bad request, not a 500.
            for week in ("2025-W53", "0001-W01", "9999-W52"):
                answer = await client.get(f"/quality?week={week}")
                assert answer.status_code == 400, (week, answer.status_code)
                assert answer.headers["content-type"].startswith("text/html")
            assert (await client.get("/nowhere")).status_code == 404
            wrong_method = await client.post("/board")
            assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"
            assert any(w in wrong_method.text for w in LABELS["method_not_allowed"])


@SQLITE
async def test_a_token_limited_by_scope_sees_only_the_pages_its_apis_would_show(
    platform: Platform, life: Lifecycle
) -> None:
    """Each page needs the scope of the API it shows (docs/access-control.md)."""
    tid = await life.through_repair()
    await project_feedback(platform)
    async with console_client(platform, "auditor", scopes=["tickets:read"]) as client:
        for page in ("/board", "/sla"):
            assert (await client.get(page)).status_code == 200, page
        page = (await client.get(f"/tickets/{tid}")).text  # the checklist is reports:read's
        assert "visited_before_repair" not in page and "data-item=" not in page
        for page in ("/compliance", "/quality", "/live", "/audit"):
            refused = await client.get(page)
            assert refused.status_code == 403, page
            assert "<code>tickets:read</code>" not in refused.text  # the page's own scope
        board = (await client.get("/board")).text  # links only to what the token opens
        assert 'href="/sla"' in board and 'href="/compliance"' not in board
        assert 'href="/live"' not in board and 'href="/audit"' not in board
    async with console_client(platform, "dispatcher") as client:
        refused = (await client.get("/audit")).text  # says what the page asks
        assert "<code>audit:export</code>" in refused and "role_" not in refused
    scopes = ["tickets:read", "reports:read", "events:read", "audit:export"]
    async with console_client(platform, "auditor", scopes=scopes) as client:
        for page in ("/compliance", "/quality", "/live", "/audit"):
            assert (await client.get(page)).status_code == 200, page
        page = (await client.get(f"/tickets/{tid}")).text
        assert "visited_before_repair" in page or "data-item=" in page


@SQLITE
async def test_regional_center_sees_only_its_region(platform: Platform, life: Lifecycle) -> None:
    east = await open_tickets(life, "east", 2)
    west = await open_tickets(life, "west", 2)
    numbers = await platform.db.read(
        lambda c: {tid: queries.ticket(c, tid).ticket_number for tid in east + west}
    )
    life.clock.advance(hours=30)  # every response deadline has passed: all breached
    await project_feedback(platform)
    async with console_client(platform, "regional_center", region="east") as rc:
        for page in ("/board", "/board?region=west", "/sla", "/sla?region=west&state=breached"):
            html = (await rc.get(page)).text
            assert all(numbers[t] not in html for t in west), page
        board = (await rc.get("/board")).text
        assert all(numbers[t] in board for t in east)
        sla = (await rc.get("/sla?state=breached")).text
        assert all(numbers[t] in sla for t in east)
        assert ">west<" not in sla  # not even in the per-region summary
        for tid in west:
            page = await rc.get(f"/tickets/{tid}")
            assert page.status_code == 404 and numbers[tid] not in page.text
        assert (await rc.get(f"/tickets/{east[0]}")).status_code == 200
        behind = await rc.get("/compliance/tickets?month=2026-11&rate=all&region=west")
        assert all(numbers[t] not in behind.text for t in west)
        mine = await rc.get("/compliance/tickets?month=2026-11&rate=all")
        assert all(numbers[t] in mine.text for t in east)
        # Without a month: this month's, as the compliance page.
        this_month = await rc.get("/compliance/tickets?rate=all")
        assert this_month.status_code == 200 and all(numbers[t] in this_month.text for t in east)
        # Pages by ticket number, whatever an import accepted as one.
        for after in ("WO/2025/0049", "工单 0001"):
            paged = await rc.get("/compliance/tickets", params={"month": "2026-11", "after": after})
            assert paged.status_code == 200, after
        # The ticket page takes a ticket id as the APIs do (any case, dashes or not).
        assert (await rc.get(f"/tickets/{east[0].upper()}")).status_code == 200
        assert (await rc.get(f"/tickets/{east[0].replace('-', '')}")).status_code == 200
    async with console_client(platform, "auditor") as hq:
        board = (await hq.get("/board")).text
        assert all(numbers[t] in board for t in east + west)
        west_only = (await hq.get("/board?region=west")).text
        assert all(numbers[t] not in west_only for t in east)


@SQLITE
async def test_ticket_page_timeline_checklist_and_masking(
    platform: Platform, life: Lifecycle
) -> None:
    tid = await life.through_repair(region="east")
    await project_feedback(platform)
    async with console_client(platform, "auditor") as auditor:
        page = (await auditor.get(f"/tickets/{tid}")).text
    for event_type in ("TicketReceived", "TicketDiagnosed", "TicketDispatched", "TicketRepaired"):
        assert event_type in page
    assert "agent-1" in page or "call_center_agent" in page  # the actor
    assert page.count('class="ok"') >= 5 and "BROKEN" not in page and "校验失败" not in page
    for item in ("responded_within_sla", "resolved_within_sla", "follow_up_done"):
        assert f'data-item="{item}"' in page
    # The checklist's notes in the page's language (Chinese by default).
    assert "按时响应" in page and "responded in time" not in page
    # Personal data: masked for an auditor, in full for a dispatcher.
    assert "138****5678" in page and "13812345678" not in page
    assert "1 Garden Road" not in page
    async with console_client(platform, "dispatcher") as dispatcher:
        full = (await dispatcher.get(f"/tickets/{tid}")).text
    assert "13812345678" in full


@SQLITE
async def test_board_pages_with_a_keyset_cursor(
    platform: Platform, life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "PAGE_SIZE", 3)
    monkeypatch.setattr(routes, "COLUMN_SIZE", 2)
    opened = []
    for _ in range(7):
        opened.append(await life.open(region="east", urgency="urgent"))
        life.clock.advance(minutes=5)
    seen: list[str] = []
    async with console_client(platform, "auditor") as client:
        overview = (await client.get("/board")).text
        assert "status=received" in overview  # "more" link: 7 open, 2 shown
        url = "/board?status=received"
        pages = 0
        while url:
            html = (await client.get(url)).text
            seen += re.findall(r'href="/tickets/([0-9a-f-]{36})"', html)
            found = re.search(r'rel="next" href="([^"]+)"', html)
            url = found.group(1).replace("&amp;", "&") if found else ""
            pages += 1
        assert pages == 3
    assert seen == opened  # nearest deadline first, each once


async def verification_run(client: httpx.AsyncClient) -> str:
    """Start a verification from the audit page; its status once finished (ok or bad)."""
    started = await client.post("/audit/verification", headers={"HX-Request": "true"})
    assert started.status_code == 200
    for _ in range(100):
        status = (await client.get("/audit/verification")).text
        if 'class="verify ok"' in status or 'class="verify bad"' in status:
            break
        await asyncio.sleep(0.05)
    return status


@SQLITE
async def test_console_verification_of_the_callers_scope(
    platform: Platform, life: Lifecycle
) -> None:
    await open_tickets(life, "east", 2)
    await open_tickets(life, "west", 1)
    for role, region, expected in (("auditor", None, None), ("regional_center", "east", 2)):
        async with console_client(platform, role, region=region) as client:
            assert "verify" in (await client.get("/audit")).text.lower()
            status = await verification_run(client)
            checked = re.search(r'data-field="events-checked">(\d+)<', status)
            assert checked, status
            if expected is not None:
                assert int(checked.group(1)) == expected
            assert 'class="verify ok"' in status, status
    # A row edited into no event: listed as unreadable, the walk goes on to the end.
    good = await platform.db.read(
        lambda c: c.execute(select(events.c.payload).where(events.c.position == 1)).scalar_one()
    )
    garbage = update(events).where(events.c.position == 1).values(payload="not json")
    await platform.db.write(lambda c: c.execute(garbage))
    async with console_client(platform, "auditor") as client:
        status = await verification_run(client)
    assert 'class="verify bad"' in status and "unreadable" in status, status
    assert re.search(r'data-field="events-checked">3<', status), status
    # The damaged ticket's page says what happened, as a page.
    first = select(events.c.stream_id).where(events.c.position == 1)
    damaged = await platform.db.read(lambda c: c.execute(first).scalar_one())
    async with console_client(platform, "auditor") as client:
        page = await client.get(f"/tickets/{damaged}")
    assert page.status_code == 500 and "text/html" in page.headers["content-type"]
    assert "ticketline verify" in page.text
    # The newest event removed (the counter says more): the end of the walk says so, as
    # `ticketline verify` does.
    await platform.db.write(
        lambda c: c.execute(update(events).where(events.c.position == 1).values(payload=good))
    )
    await platform.db.write(lambda c: c.execute(text("DELETE FROM outbox WHERE position = 3")))
    await platform.db.write(lambda c: c.execute(text("DELETE FROM events WHERE position = 3")))
    async with console_client(platform, "auditor") as client:
        status = await verification_run(client)
    assert 'class="verify bad"' in status and "ledger_tail" in status, status


@SQLITE
async def test_a_regions_verification_finds_an_event_cut_from_its_ticket(
    platform: Platform, life: Lifecycle
) -> None:
    # A region's walk skips versions held elsewhere (a moved ticket): a version missing
    # from the whole ledger is not one of those.
    ticket = await life.through_repair(region="east")
    second = select(events.c.position).where(
        events.c.stream_id == ticket, events.c.stream_version == 2
    )

    async def east_verified_without(event: Select[Any]) -> str:
        """The east center's verification after the event ``event`` selects was cut."""
        position = await platform.db.read(lambda c: c.execute(event).scalar_one())
        for table in ("outbox", "events"):
            cut = text(f"DELETE FROM {table} WHERE position = :p")
            await platform.db.write(lambda c, cut=cut: c.execute(cut, {"p": position}))
        async with console_client(platform, "regional_center", region="east") as client:
            return await verification_run(client)

    status = await east_verified_without(second)
    assert 'class="verify bad"' in status and "version 2 is not in the ledger" in status, status
    # Another of its tickets cut at its end: every link left holds, its state row tells.
    other = await life.through_repair(region="east")
    last = select(func.max(events.c.position)).where(events.c.stream_id == other)
    status = await east_verified_without(last)
    assert "events at the end of its stream were removed" in status, status


@SQLITE
async def test_a_verification_that_stops_says_so(
    platform: Platform, life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.console import queries

    def unavailable(*_args: Any) -> bool:
        raise RuntimeError("the database went away")

    await open_tickets(life, "east", 1)
    monkeypatch.setattr(queries, "verify_batch", unavailable)
    async with console_client(platform, "auditor") as client:
        status = await verification_run(client)
    assert "校验未完成" in status and "RuntimeError" in status, status  # the default locale
    assert "发现断链" not in status


@SQLITE
async def test_every_console_query_uses_an_index(platform: Platform, life: Lifecycle) -> None:
    """Every statement the pages run, explained on SQLite: big tables are only ever
    searched through an index (SEARCH), never scanned, and never sorted in memory."""

    tid = await life.through_repair(region="east")
    await life.open(region="west")
    await project_feedback(platform)
    with recorded_selects(platform.db.sqlite_engine) as statements:
        for role, region in (("auditor", None), ("regional_center", "east")):
            async with console_client(platform, role, region=region) as client:
                for page in (
                    "/board",
                    "/board?urgency=urgent",
                    "/board?status=received&service_point=sp-1",
                    "/board?status=received&after=2026-11-02T09:00:00%2B00:00|00000000-0000-0000-0000-000000000000",
                    f"/tickets/{tid}",
                    "/sla",
                    "/sla?kind=resolution&state=at_risk",
                    "/compliance",
                    "/compliance?group_by=month",
                    "/compliance/tickets?month=2026-11&rate=sla",
                    "/quality",
                    "/live",
                    "/audit",
                ):
                    assert (await client.get(page)).status_code == 200, page
    big = (
        "ticket_state",
        "events",
        "feedback_compliance_tickets",
        "feedback_repairs",
        "feedback_quality_alerts",
        "dispatch_sla_clocks",
    )
    # A service point's tickets, a handful, come through its own index and are sorted:
    # never by walking every open ticket of the status, of each region, for them.
    point = "ix_ticket_state_service_point_id_status"
    problems = await platform.db.read(
        lambda conn: plan_problems(
            conn, statements, big, unsorted=("ticket_state",), bounded=(point,)
        )
    )
    for statement, parameters in statements:
        if "ticket_state.service_point_id = " in statement:
            plan = await platform.db.read(
                lambda conn, s=statement, p=parameters: explained(conn, s, p)
            )
            if f"INDEX {point} " not in plan[0]:
                problems.append(f"{plan}\n  in {statement}")
    assert statements
    assert not problems, "\n".join(problems)


def test_templates_and_assets_are_package_data() -> None:
    """`pip install .` (the Dockerfile) must ship every template and asset."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["services.console"]
    base = root / "services" / "console"
    for folder in ("templates", "static"):
        for path in (base / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(base).as_posix()
                assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def _summarise_rows(key: str | None, rows: list[Any], settings: Any) -> dict[str, Any]:
    """The reference a summary's counts are checked against: the rows' statuses and their
    ``facts`` documents (complaints, follow-ups), folded in Python."""
    import json

    from services.feedback.read_models import Tally, summarise_tally
    from services.feedback.tables import TALLY_COLUMNS

    t = Tally()
    for row in rows:
        t.tickets += 1
        for name in TALLY_COLUMNS:
            status = getattr(row, name)
            (t.compliance if name == "compliant" else t.items[name])[status] += 1
        facts = json.loads(row.facts)
        t.scores.update(f["score"] for f in facts["follow_ups"])
        t.recommend.update(f["would_recommend"] for f in facts["follow_ups"])
        t.complaints += 1 if facts["complaints"] else 0
    return summarise_tally(key, t, settings)


async def test_compliance_tallies_equal_a_fold_of_the_rows(platform: Platform) -> None:
    """Summaries (the API's and the compliance page's) count in SQL
    (feedback's ``tallies``); the figures must equal a fold of the same rows — every
    status of every item, follow-ups (none, one, two), complaints, a ticket without a
    service point, each grouping, region, month, months, service point and technician
    filters (the technician's through the tickets' rows) — on SQLite and PostgreSQL."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from services.feedback.read_models import (
        STATUSES,
        ComplianceFilters,
        merged,
        summarise_tally,
        tallies,
    )
    from services.feedback.tables import TALLY_COLUMNS
    from services.feedback.tables import compliance_tickets as table
    from services.feedback.tables import follow_ups as follow_ups_table
    from shared.kernel.reach import Reach

    rows, follow_up_rows = [], []
    for n in range(40):
        follow_ups = [
            {"score": (n * 37 + k * 11) % 101, "would_recommend": (n + k * 3) % 11}
            for k in range(n % 3)
        ]
        ticket = {
            "ticket_id": f"00000000-0000-0000-0000-{n:012d}",
            "region": ("east", "west")[n % 2],
            "month": ("2026-10", "2026-11")[n % 3 == 0],
            "service_point_id": None if n % 5 == 0 else f"sp-{n % 4}",
        }
        follow_up_rows += [
            {"event_id": f"f{n}-{k}", **ticket, **x} for k, x in enumerate(follow_ups)
        ]
        facts = {
            "complaints": [{"event_id": f"c{n}"}] if n % 7 == 0 else [],
            "follow_ups": follow_ups,
        }
        statuses = {name: STATUSES[(n + i) % len(STATUSES)] for i, name in enumerate(TALLY_COLUMNS)}
        rows.append(
            {
                **ticket,
                "ticket_number": f"TL-{n:04d}",
                "technician_id": None if n % 6 == 0 else f"tech-{n % 3}",
                "received_at": datetime(2026, 10, 1, tzinfo=UTC),
                "product_model": "WM-700",
                "status": "closed",
                **statuses,
                "checklist": "{}",
                "facts": json.dumps(facts, separators=(",", ":"), sort_keys=True),
                "version": 1,
                "complaints": len(facts["complaints"]),
            }
        )

    def write(conn: Connection) -> None:
        conn.execute(insert(table), rows)
        conn.execute(insert(follow_ups_table), follow_up_rows)

    await platform.db.write(write)
    stored = await platform.db.read(lambda conn: list(conn.execute(select(table))))
    settings = platform.settings.feedback
    picks: list[tuple[ComplianceFilters, Any]] = [
        (ComplianceFilters(), lambda r: True),
        (ComplianceFilters(region="east"), lambda r: r.region == "east"),
        (ComplianceFilters(months=("2026-10", "2026-11")), lambda r: True),
        (ComplianceFilters(month="2026-11"), lambda r: r.month == "2026-11"),
        (ComplianceFilters(service_point_id="sp-1"), lambda r: r.service_point_id == "sp-1"),
        (ComplianceFilters(technician_id="tech-1"), lambda r: r.technician_id == "tech-1"),
        (
            ComplianceFilters(reach=Reach(region="west", technician="tech-2")),
            lambda r: r.region == "west" and r.technician_id == "tech-2",
        ),
    ]
    for group_by, column in (
        ("region", "region"),
        ("service_point", "service_point_id"),
        ("technician", "technician_id"),
        ("month", "month"),
    ):
        for filters, picked in picks:
            counted = await platform.db.read(
                lambda conn, f=filters, g=group_by: tallies(conn, f, g)
            )
            mine = [r for r in stored if picked(r)]
            keys = {getattr(r, column) for r in mine}
            assert set(counted) == keys, (group_by, filters)
            for key in keys:
                expected = _summarise_rows(
                    key, [r for r in mine if getattr(r, column) == key], settings
                )
                assert summarise_tally(key, counted[key], settings) == expected, (group_by, key)
            total = summarise_tally(None, merged(counted.values()), settings)
            assert total == _summarise_rows(None, mine, settings), (group_by, filters)
    # Each rate links to the tickets behind it, or not at all: never to another list (the
    # row of tickets without a service point linked to every ticket; the six months'
    # total to month=None).
    async with console_client(platform) as client:
        groupings = (("service_point", ""), ("month", ""), ("service_point", "east"))
        for group_by, region in (*groupings, ("technician", "")):
            query = f"month=2026-11&group_by={group_by}&region={region}"
            page = (await client.get(f"/compliance?{query}")).text
            rows = page.split("<tr")[2:]
            assert "month=None" not in page and "/compliance/tickets?" in page
            for row in rows:
                if '<th scope="row">—</th>' in row or (group_by == "month" and "total" in row):
                    assert "/compliance/tickets?" not in row, (group_by, row[:200])
                elif group_by in ("service_point", "technician") and 'class="total"' not in row:
                    links = row.count("/compliance/tickets?")
                    assert links and row.count(f"{group_by}=") == links, row[:200]
        # A technician's rates: the compliance view per technician (DOMAIN.md), and the
        # tickets behind them (its drill-down keeps the technician).
        techs = sorted({r.technician_id for r in stored if r.technician_id})
        assert techs
        page = await client.get(
            "/compliance/tickets",
            params={"month": "2026-11", "rate": "all", "technician": techs[0]},
        )
        assert page.status_code == 200 and f"{techs[0]}" in page.text
        listed = page.text.count('<th scope="row"><a href="/tickets/')
        assert listed == sum(
            1 for r in stored if r.technician_id == techs[0] and r.month == "2026-11"
        )
        # NPS links to the tickets with a detractor's follow-up (what NPS is short by).
        page = await client.get(
            "/compliance/tickets", params={"month": "2026-10", "rate": "detractors"}
        )
        detractors = {
            f["ticket_id"]
            for f in follow_up_rows
            if f["would_recommend"] <= 6 and f["month"] == "2026-10"
        }
        assert page.text.count('<th scope="row"><a href="/tickets/') == len(detractors) > 0
        # The heading words what the page lists, in the viewer's language, never the key.
        assert any(f": {label}</p>" in page.text for label in LABELS["filter_detractors"])
        assert all(f"filter_{rate}" in LABELS for rate in RATE_FILTERS)
        assert "rate=detractors" in (await client.get("/compliance?month=2026-10")).text


@SQLITE
async def test_a_page_cursor_the_console_did_not_write_is_a_bad_request(platform: Platform) -> None:
    async with console_client(platform) as client:
        for path in (
            "/board?status=received&after=garbage",
            "/board?status=received&after=x|y",  # a deadline column: x is no time
            "/sla?state=breached&after=garbage",
            "/board?status=received&after=2026-11-27|x",  # a time without its offset
            "/sla?kind=resolution&state=at_risk&after=2026-11-27T19:46:00|x",
            # A time the console could write, beside no ticket id.
            "/board?status=received&after=2026-11-30T05:00:00%2B00:00|not-a-uuid",
            "/board?status=received&after=2026-11-30T05:00:00%2B00:00|%27%20OR%201%3D1--",
            "/board?region=%00",  # no text (the services' own check): the HTML page too
        ):
            answer = await client.get(path)
            assert answer.status_code == 400, (path, answer.status_code)


@SQLITE
async def test_a_malformed_filter_is_a_bad_request_naming_it(platform: Platform) -> None:
    """As in the APIs (a 422): a region or service point of no such shape is refused, not
    a page of nothing; "" is the forms' "all"; the page names what was refused."""
    async with console_client(platform) as client:
        for path, field in (
            ("/board?region=!!", "region"),
            ("/sla?region=!!", "region"),
            ("/compliance?region=!!", "region"),
            ("/board?service_point=!!", "service_point"),
            ("/compliance/tickets?service_point=a%20b", "service_point"),
            ("/quality?week=bogus", "week"),
            ("/board?status=received&after=garbage", "after"),
        ):
            answer = await client.get(path)
            assert answer.status_code == 400, (path, answer.status_code)
            assert f'<code class="field">{field}</code>' in answer.text, (path, answer.text)
        for path in ("/board?region=&service_point=", "/board?region=EAST", "/sla?region="):
            assert (await client.get(path)).status_code == 200, path


async def test_the_live_streams_position_is_ascii_digits(platform: Platform) -> None:
    from services.console.routes import _position_or_none

    async with console_client(platform) as client:
        for after in ("2_0", "+2", "²", "-1"):
            answer = await client.get("/live/stream", params={"after": after})
            assert answer.status_code == 400, (after, answer.status_code)
    # Past the ledger's end (another ledger's position): from the head, not a silent gap.
    from services.console.routes import live_start

    assert [live_start(9, None, 5), live_start(None, 99, 5), live_start(3, 4, 5)] == [5, 5, 3]
    assert live_start(None, None, 5) == 5
    # A Last-Event-ID that is no position starts where a new page would (int("²") raised).
    assert [_position_or_none(v) for v in ("²", "12", " 7 ", None, "9" * 30)] == [
        None,
        12,
        7,
        None,
        None,
    ]


def _summary_row(html: str, region: str) -> list[int]:
    """The SLA page's summary figures of a region: response breached, due soon,
    resolution breached, due soon."""
    row = re.search(
        rf'<tr><th scope="row"><a href="/sla\?region={region}[^"]*">{region}</a></th>(.*?)</tr>',
        html,
        re.S,
    )
    assert row is not None, html
    return [int(n) for n in re.findall(r"<td[^>]*>(\d+)</td>", row.group(1))]


def _card(html: str, ticket_id: str) -> str:
    found = re.search(
        rf'<li class="card (card-\w+)" data-ticket="{ticket_id}">(.*?)</li>', html, re.S
    )
    assert found is not None, html
    return found.group(1) + found.group(2)


async def test_a_pause_after_the_breach_leaves_the_ticket_breached(
    platform: Platform, life: Lifecycle, dispatch: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A pause undoes no breach: paused once its deadline had passed, a ticket stays
    breached on the board, in the SLA counts and the breached list."""
    (late,) = await open_tickets(life, "east", 1)  # normal: 24 h to respond
    clock.advance(hours=30)
    pause = {"reason": "customer_unavailable"}
    assert (await dispatch.post(f"/tickets/{late}/sla/pause", json=pause)).status_code == 200
    await platform.runner.catch_up(SLA_CLOCKS)
    async with console_client(platform) as client:
        assert "card-breached" in _card((await client.get("/board")).text, late)
        sla = (await client.get("/sla")).text
        assert _summary_row(sla, "east")[:2] == [1, 0]
        assert f"/tickets/{late}" in (await client.get("/sla?state=breached")).text
        assert "risk-breached" in (await client.get(f"/tickets/{late}")).text


async def test_the_sla_pages_follow_the_clock_not_the_recorded_deadline(
    platform: Platform, life: Lifecycle, dispatch: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A paused ticket is never shown breached or at risk (its clock never breaches), and a
    resumed one counts from its deadline moved by the pause, on the board, the SLA risk
    page and the ticket page."""
    paused, running = await open_tickets(life, "east", 2)  # normal: 24 h to respond
    pause = {"reason": "customer_unavailable"}
    assert (await dispatch.post(f"/tickets/{paused}/sla/pause", json=pause)).status_code == 200
    clock.advance(hours=30)  # both recorded deadlines passed
    await platform.runner.catch_up(SLA_CLOCKS)
    async with console_client(platform) as client:
        board = (await client.get("/board")).text
        assert "card-paused" in _card(board, paused) and "card-breached" in _card(board, running)
        sla = (await client.get("/sla")).text
        assert _summary_row(sla, "east")[:2] == [1, 0]  # the running one breached, not the paused
        assert f"/tickets/{running}" in sla and f"/tickets/{paused}" not in sla
        at_risk = (await client.get("/sla?state=at_risk")).text
        assert f"/tickets/{paused}" not in at_risk
        page = (await client.get(f"/tickets/{paused}")).text
        assert "risk-paused" in page and "risk-breached" not in page
        # Another service's event makes the clock row older than the ticket until the
        # projector runs: the pause (dispatch's own, kept current) still shows.
        correction = {"customer": {"name": "Li Wei", "phone": "13987654321"}, "reason": "new"}
        corrected = await life.intake.patch(f"/tickets/{paused}/contact", json=correction)
        assert corrected.status_code == 200, corrected.text
        board = (await client.get("/board")).text
        assert "card-paused" in _card(board, paused)
        assert _summary_row((await client.get("/sla")).text, "east")[:2] == [1, 0]

    # Resumed after 30 h: its deadline moves by the paused time, 24 h from now.
    assert (await dispatch.post(f"/tickets/{paused}/sla/resume", json={})).status_code == 200
    await platform.runner.catch_up(SLA_CLOCKS)
    async with console_client(platform) as client:
        board = (await client.get("/board")).text
        assert "card-low" in _card(board, paused)
        sla = (await client.get("/sla")).text
        assert _summary_row(sla, "east")[:2] == [1, 0]
        assert f"/tickets/{paused}" not in sla
        at_risk = (await client.get("/sla?state=at_risk")).text
        assert f"/tickets/{paused}" in at_risk and f"/tickets/{running}" not in at_risk

    # A clock deadline earlier than the recorded one (a re-dispatch to a point with other
    # hours): breached on its card, counted among those due until the recorded one passes,
    # as the lists show it — the count and the list it links to agree.
    (early,) = await open_tickets(life, "east", 1)
    await platform.runner.catch_up(SLA_CLOCKS)
    passed = clock.now() - timedelta(minutes=5)
    clocks = SLA_CLOCKS_TABLE.c
    await platform.db.write(
        lambda c: c.execute(
            update(SLA_CLOCKS_TABLE).where(clocks.ticket_id == early).values(response_due_at=passed)
        )
    )
    clock.advance(hours=21)  # its recorded deadline (24 h) and the resumed one's: 3 h away
    async with console_client(platform) as client:
        sla = (await client.get("/sla")).text
        assert _summary_row(sla, "east")[:2] == [1, 2]  # `running` breached; the others due
        breached = (await client.get("/sla?state=breached")).text
        assert f"/tickets/{early}" not in breached and f"/tickets/{running}" in breached
        assert f"/tickets/{early}" in (await client.get("/sla?state=at_risk")).text


def test_every_checklist_note_has_its_chinese_words() -> None:
    """The notes feedback's checklist writes (services/feedback/compliance.py, facts.py):
    each, or the start of one ending in what it is about, is translated."""
    import ast
    from pathlib import Path

    from services.console.i18n import NOTE_STARTS, NOTES, translator

    root = Path(__file__).resolve().parent.parent / "services" / "feedback"
    notes: set[str] = set()
    starts: set[str] = set()
    for name in ("compliance.py", "facts.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            said: list[ast.expr] = []
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("Item", "Word"):
                said = node.args[2:3]
            elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "note":
                said = [node.value]
            for value in said:
                branches = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                for branch in branches:
                    if isinstance(branch, ast.Constant):
                        notes.add(branch.value)
                    elif isinstance(branch, ast.JoinedStr) and isinstance(
                        branch.values[0], ast.Constant
                    ):
                        starts.add(branch.values[0].value)
    assert notes and starts
    assert notes - set(NOTES) == set()
    assert starts - set(NOTE_STARTS) == set()
    t = translator("zh")
    assert t("awaiting return of MOTOR-WM700") == "等待返还：MOTOR-WM700"
    assert translator("en")("awaiting return of MOTOR-WM700") == "awaiting return of MOTOR-WM700"


@SQLITE
async def test_chart_data_cannot_close_its_script_element(
    platform: Platform, life: Lifecycle, clock: ManualClock
) -> None:
    """A product model is free text: in the quality chart's JSON it stays data (found by a
    black-box pass: `</script><meta http-equiv=refresh …>` redirected every viewer)."""
    from services.feedback.jobs import raise_quality_alerts
    from shared.app.config import FeedbackSettings

    platform.settings.feedback = FeedbackSettings(quality_alert_threshold=2)
    model = "Q</script><meta http-equiv=refresh content=1;url=http://198.51.100.7/p>"
    for _ in range(2):
        await life.through_repair(await life.open(model=model))
    assert await raise_quality_alerts(platform, clock.now().date())
    await project_feedback(platform)
    async with console_client(platform, "auditor") as client:
        page = (await client.get("/quality")).text
    chart = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page)
    assert chart is not None and "\\u003c/script\\u003e\\u003cmeta" in chart.group(1)
    assert "<meta http-equiv" not in page

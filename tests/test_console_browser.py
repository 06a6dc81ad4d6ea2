"""The console in a real browser: headless Chromium (Debian's package) driven by
Playwright, against the console and intake served on 127.0.0.1.

Every request the browser makes is recorded; anything not on loopback is aborted and
fails the test — the pages and /docs must render completely without the internet.
Screenshots of each page go to tests/artifacts/console/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.app.registry import app_factory
from tests.support.auth import headers_for, token_for
from tests.support.browser import Traffic, browser_context, screenshot
from tests.support.lifecycle import Lifecycle, project_feedback
from tests.support.servers import serve_app

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
TIMEOUT_MS = 10_000


@asynccontextmanager
async def stack(platform: Platform) -> AsyncIterator[dict[str, str]]:
    """The console and intake (for the API and its /docs) on loopback ports."""
    async with (
        serve_app(app_factory("console")(platform)) as console,
        serve_app(app_factory("intake")(platform)) as intake,
    ):
        yield {"console": console, "intake": intake}


async def sign_in(page: Any, console: str, token: str) -> None:
    await page.goto(f"{console}/board")
    await page.locator("#token").fill(token)  # the field is found by its label's target
    await page.get_by_role("button", name=re.compile("登录|Sign in")).click()
    await page.wait_for_url(f"{console}/board")


def assert_loopback_only(traffic: Traffic) -> None:
    assert traffic.requested, "the browser made no request at all"
    assert not traffic.outside_loopback(), traffic.outside_loopback()


async def open_ticket_over_api(intake: str, region: str = "east") -> dict[str, Any]:
    body = {**RECEIVE_EXAMPLE, "address": {**RECEIVE_EXAMPLE["address"], "region": region}}
    async with httpx.AsyncClient(base_url=intake, headers=headers_for("call_center_agent")) as api:
        response = await api.post("/tickets", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_board_goes_live_and_every_page_renders_offline(
    platform: Platform, life: Lifecycle
) -> None:
    # Some history for the compliance and SLA pages.
    repaired = await life.through_repair(region="east")
    await life.open(region="west", urgency="critical")
    await project_feedback(platform)
    async with stack(platform) as urls, browser_context() as (context, traffic):
        console = urls["console"]
        page = await context.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        await sign_in(page, console, token_for("auditor", subject="carol"))
        # Signed in (the sign-in page itself answers 401), nothing errs in the browser's
        # console (a missing favicon did, on every first load).
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.locator("#board-columns").wait_for()
        await screenshot(page, "board")
        # The page has an SSE connection; a ticket opened over the API appears on the
        # board without a reload (the marker set on this document survives).
        await page.evaluate("window.__notReloaded = true")
        created = await open_ticket_over_api(urls["intake"])
        card = page.locator(f'[data-ticket="{created["ticket_id"]}"]')
        await card.wait_for()
        assert await page.evaluate("window.__notReloaded === true")
        await screenshot(page, "board-live")
        # Open it: timeline and checklist.
        await project_feedback(platform)
        await card.get_by_role("link").click()
        await page.wait_for_url(re.compile(r"/tickets/"))
        checklist = page.locator("#checklist")
        await checklist.locator('[data-item="responded_within_sla"]').wait_for()
        assert await page.locator("ol.timeline li").count() >= 1
        assert "138****5678" in await page.content()  # masked for an auditor
        await screenshot(page, "ticket")
        await page.goto(f"{console}/tickets/{repaired}")
        await screenshot(page, "ticket-repaired")
        # Every other page renders (charts drawn from the vendored library).
        for name, path, ready in (
            ("sla", "/sla?state=at_risk", "table.list"),
            ("compliance", "/compliance", ".chart svg"),
            ("quality", "/quality", "table.list"),
            ("audit", "/audit", "table.list"),
        ):
            await page.goto(f"{console}{path}")
            await page.locator(ready).first.wait_for()
            await screenshot(page, name)
        assert errors == [], errors
        # The audit verification runs and reports.
        await page.get_by_role("button", name=re.compile("立即校验|Verify now")).click()
        await page.locator(".verify.ok").wait_for()
        await screenshot(page, "audit-verified")
        # Live: a new event arrives at the top without reloading.
        await page.goto(f"{console}/live")
        await page.locator("#live-events tr").first.wait_for()
        before = await page.locator("#live-events tr").count()
        second = await open_ticket_over_api(urls["intake"])
        await page.locator("#live-events a", has_text=second["ticket_number"]).wait_for()
        assert await page.locator("#live-events tr").count() == before + 1
        await screenshot(page, "live")
        # The table keeps its newest rows only; the note says when the stream is down.
        await page.evaluate(
            "document.getElementById('live-events').setAttribute('data-keep-rows', '1')"
        )
        third = await open_ticket_over_api(urls["intake"])
        await page.locator("#live-events a", has_text=third["ticket_number"]).wait_for()
        assert await page.locator("#live-events tr").count() == 1
        down = "document.querySelector('[sse-connect]').dispatchEvent(new CustomEvent('{}', {{bubbles: true}}))"
        await page.evaluate(down.format("htmx:sseError"))
        assert await page.locator(".live-note.off").count() == 1
        await page.evaluate(down.format("htmx:sseOpen"))
        assert await page.locator(".live-note.off").count() == 0
        # English labels with the switch; the tablet width works too.
        await page.goto(f"{console}/board")
        await page.get_by_role("link", name="English").click()
        await page.get_by_role("heading", name=re.compile("Board")).wait_for()
        await screenshot(page, "board-en")
        await page.set_viewport_size({"width": 820, "height": 1180})
        await screenshot(page, "board-tablet")
        await page.set_viewport_size({"width": 1280, "height": 800})
        # The API docs of a service render from local assets.
        await page.goto(f"{urls['intake']}/docs")
        await page.locator(".swagger-ui .info .title").wait_for()
        await page.locator(".opblock").first.wait_for()
        await screenshot(page, "intake-docs")
        await page.goto(f"{urls['intake']}/redoc")
        await page.locator("h1", has_text="Ticketline intake").first.wait_for()
        await screenshot(page, "intake-redoc")
        await page.close()
    assert_loopback_only(traffic)
    assert any("/live/stream" in u for u in traffic.requested)
    assert any("/docs/assets/swagger-ui-bundle.js" in u for u in traffic.requested)


async def test_regional_center_sees_only_its_region(platform: Platform, life: Lifecycle) -> None:
    await life.open(region="east")
    async with stack(platform) as urls, browser_context() as (context, traffic):
        west = await open_ticket_over_api(urls["intake"], region="west")
        east = await open_ticket_over_api(urls["intake"], region="east")
        console = urls["console"]
        page = await context.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        await sign_in(page, console, token_for("regional_center", region="east"))
        await page.locator(f'[data-ticket="{east["ticket_id"]}"]').wait_for()
        html = await page.content()
        assert west["ticket_number"] not in html
        # The other region's ticket by URL: the 404 page, nothing of the ticket.
        response = await page.goto(f"{console}/tickets/{west['ticket_id']}")
        assert response is not None and response.status == 404
        await page.get_by_role("heading", name=re.compile("未找到|Not found")).wait_for()
        assert west["ticket_number"] not in await page.content()
        await screenshot(page, "not-found")
        # Asking the board for the other region shows nothing of it either.
        await page.goto(f"{console}/board?region=west")
        assert west["ticket_number"] not in await page.content()
        await page.close()
    assert_loopback_only(traffic)


async def test_expired_token_shows_the_sign_in_page(platform: Platform) -> None:
    async with stack(platform) as urls, browser_context() as (context, traffic):
        console = urls["console"]
        await context.add_cookies(  # type: ignore[attr-defined]
            [
                {
                    "name": "ticketline_console",
                    "value": token_for("auditor", ttl_seconds=-60),
                    "url": console,
                }
            ]
        )
        page = await context.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        response = await page.goto(f"{console}/board")
        assert response is not None and response.status == 401
        await page.locator("#token").wait_for()
        assert await page.get_by_role("alert").count() >= 1
        assert "Traceback" not in await page.content()
        await screenshot(page, "sign-in-expired")
        # A role that may not use the console gets the 403 page.
        await sign_in_refused(page, console, token_for("call_center_agent"))
        await screenshot(page, "forbidden")
        await page.close()
    assert_loopback_only(traffic)


async def test_a_session_ending_on_a_live_page_goes_to_sign_in_without_an_error(
    platform: Platform,
) -> None:
    async with stack(platform) as urls, browser_context() as (context, traffic):
        console = urls["console"]
        page = await context.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        await sign_in(page, console, token_for("auditor", ttl_seconds=4))
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{console}/live")
        await page.wait_for_url(re.compile(r"/sign-in\?next=%2Flive&reason=expired"))
        await page.locator("#token").wait_for()
        await page.locator("p.notice[role=alert]").wait_for()  # it says the sign-in expired
        assert errors == [], errors  # the stream was not cut under the page
        await page.close()
    assert_loopback_only(traffic)


async def test_a_long_unbroken_name_does_not_widen_the_ticket_page(platform: Platform) -> None:
    async with stack(platform) as urls, browser_context() as (context, traffic):
        body = {**RECEIVE_EXAMPLE, "customer": {"name": "A" * 180, "phone": "13812345678"}}
        headers = headers_for("call_center_agent")
        async with httpx.AsyncClient(base_url=urls["intake"], headers=headers) as api:
            created = (await api.post("/tickets", json=body)).json()
        page = await context.new_page()  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        await sign_in(page, urls["console"], token_for("admin"))
        for width in (1280, 768):
            await page.set_viewport_size({"width": width, "height": 800})
            await page.goto(f"{urls['console']}/tickets/{created['ticket_id']}")
            await page.get_by_text("A" * 20).first.wait_for()
            wide = await page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, (width, wide)
        await page.close()
    assert_loopback_only(traffic)


async def sign_in_refused(page: Any, console: str, token: str) -> None:
    await page.goto(f"{console}/sign-in")
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name=re.compile("登录|Sign in")).click()
    await page.get_by_role("heading", name=re.compile("无权访问|Not allowed")).wait_for()
    await asyncio.sleep(0)

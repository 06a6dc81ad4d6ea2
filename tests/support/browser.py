"""Headless Chromium for the browser tests: Debian's ``chromium`` package (installed here
when missing and running as root, like PostgreSQL in tests/support/postgres.py), driven by
Playwright for Python. Never ``playwright install``: the browser is the system's.

Every request the page makes is recorded; one to anything but loopback is aborted and
reported, so a test can assert that nothing left 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.packages import ensure_installed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Chinese labels are the console's default: a CJK font keeps screenshots legible.
PACKAGES = ["chromium", "fonts-wqy-microhei"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def ensure_chromium_installed() -> Path:
    # As root, the CJK font is installed too; a user without it still gets the tests.
    ensure_installed(
        PACKAGES,
        lambda: CHROMIUM.exists() and (CJK_FONT.exists() or os.geteuid() != 0),
        "sudo apt-get install -y chromium",
    )
    if not CHROMIUM.exists():
        raise RuntimeError("apt-get installed chromium but /usr/bin/chromium is missing")
    return CHROMIUM


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return (parts.hostname or "") in LOOPBACK or (parts.hostname or "").startswith("127.")


@dataclass
class Traffic:
    """Every URL the browser asked for, and those it was not allowed to reach."""

    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def outside_loopback(self) -> list[str]:
        return [u for u in self.requested if not is_loopback(u)] + self.blocked


@asynccontextmanager
async def browser_context(
    *, width: int = 1280, height: int = 800, locale: str = "zh-CN"
) -> AsyncIterator[tuple[object, Traffic]]:
    """(Playwright BrowserContext, Traffic): a fresh profile on the system Chromium."""
    from playwright.async_api import Route, async_playwright

    executable = ensure_chromium_installed()
    traffic = Traffic()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        context = await browser.new_context(
            viewport={"width": width, "height": height}, locale=locale
        )

        async def guard(route: Route) -> None:
            url = route.request.url
            if is_loopback(url):
                await route.continue_()
            else:
                traffic.blocked.append(url)
                await route.abort()

        await context.route("**/*", guard)
        context.on("request", lambda request: traffic.requested.append(request.url))
        try:
            yield context, traffic
        finally:
            await context.close()
            await browser.close()


async def screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)  # type: ignore[attr-defined]
    return path

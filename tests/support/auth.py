"""How a test acts as a caller. Every test builds its credentials here: real signed tokens,
verified by the services exactly as in production."""

from __future__ import annotations

from shared.app.config import AuthSettings, Settings
from shared.http.auth.tokens import REGION_ROLES, issue_token

# The HS256 secret the test platform's Settings carry (tests/conftest.py `platform`).
TEST_JWT_SECRET = "test-secret-for-ticketline-tests-only-" + "0123456789abcdef" * 2
# Tests open many tickets as one caller: the intake rate limit is tested on its own.
TEST_INTAKE_BURST = 1_000_000
TEST_AUTH = AuthSettings(jwt_secret=TEST_JWT_SECRET, intake_burst=TEST_INTAKE_BURST)
# For Settings a test builds itself (tests/conftest.py puts these in the environment).
TEST_AUTH_ENV = {
    "TICKETLINE_AUTH_JWT_SECRET": TEST_JWT_SECRET,
    "TICKETLINE_AUTH_INTAKE_BURST": str(TEST_INTAKE_BURST),
}

# The role each service's client acts in unless a test says otherwise.
DEFAULT_ROLE_BY_SERVICE = {
    "intake": "call_center_agent",
    "dispatch": "dispatcher",
    "parts": "parts_clerk",
    "feedback": "customer_relations",
}
# A regional center's token must name its region; this one when a test gives none. Other
# roles without region / location act for headquarters (every region / location).
DEFAULT_REGION = "east"


def token_for(
    role: str,
    *,
    subject: str | None = None,
    region: str | None = None,
    location: str | None = None,
    scopes: list[str] | None = None,
    ttl_seconds: int = 3600,
    settings: Settings | None = None,
) -> str:
    if role in REGION_ROLES and not region:
        region = DEFAULT_REGION
    return issue_token(
        settings or Settings(auth=TEST_AUTH),
        role=role,
        subject=subject or f"{role}-1",
        region=region,
        location=location,
        scopes=scopes,
        ttl_seconds=ttl_seconds,
    )


def headers_for(
    role: str,
    *,
    subject: str | None = None,
    region: str | None = None,
    location: str | None = None,
) -> dict[str, str]:
    """Request headers that authenticate as ``subject`` acting in ``role``."""
    token = token_for(role, subject=subject, region=region, location=location)
    return {"Authorization": f"Bearer {token}"}

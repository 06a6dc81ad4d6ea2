"""How a test acts as a caller. Every test builds its credentials here, so the switch
from actor headers to tokens changes this module and no test."""

from __future__ import annotations

# The role each service's client acts in unless a test says otherwise.
DEFAULT_ROLE_BY_SERVICE = {
    "intake": "call_center_agent",
    "dispatch": "dispatcher",
    "parts": "parts_clerk",
    "feedback": "customer_relations",
}


def headers_for(
    role: str,
    *,
    subject: str | None = None,
    region: str | None = None,
    location: str | None = None,
) -> dict[str, str]:
    """Request headers that authenticate as ``subject`` acting in ``role``."""
    headers = {"X-Actor": subject or f"{role}-1", "X-Actor-Role": role}
    if region:
        headers["X-Actor-Region"] = region
    if location:
        headers["X-Actor-Location"] = location
    return headers

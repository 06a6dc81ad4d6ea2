"""Request headers every service reads the same way."""

from __future__ import annotations

from fastapi import Header

from shared.http.problems import ProblemError


async def expected_version(
    if_match: str | None = Header(
        default=None,
        description='The stream version you last read (the ETag, e.g. `"3"`); a stale '
        "version gets 409 instead of overwriting someone else's change.",
    ),
) -> int | None:
    if if_match is None:
        return None
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise ProblemError(
            422,
            "validation-error",
            "The request is not valid",
            'If-Match must be a stream version such as "3"',
            errors=[{"field": "If-Match", "message": "not a stream version"}],
        )
    return int(raw)


async def idempotency_key(
    idempotency_key: str | None = Header(
        default=None,
        description="Retry-safe key: the same key returns the first result, never a second one.",
    ),
) -> str | None:
    return idempotency_key


def etag(version: int) -> str:
    return f'"{version}"'

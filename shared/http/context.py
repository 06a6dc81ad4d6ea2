"""Who is calling and on whose behalf: the actor and the correlation of a request.

The actor comes from the ``X-Actor`` / ``X-Actor-Role`` headers for now; access control
(authenticated tokens) replaces exactly this module's ``current_actor``.
"""

from __future__ import annotations

from uuid import UUID, uuid4

from fastapi import Header, Request

from shared.events.envelope import Actor, CommandContext
from shared.http.problems import ProblemError

ROLES = frozenset(
    {
        "call_center_agent",
        "dispatcher",
        "technician",
        "parts_clerk",
        "customer_relations",
        "regional_center",
        "auditor",
        "admin",
        "system",
    }
)
# Roles that see a customer's phone and address in full; everyone else sees them masked.
PERSONAL_DATA_ROLES = frozenset({"dispatcher", "technician", "customer_relations", "admin"})


def current_actor(
    x_actor: str = Header(
        default="anonymous", max_length=200, description="Acting user (until tokens)."
    ),
    x_actor_role: str = Header(default="call_center_agent", description="Role the user acts in."),
) -> Actor:
    if x_actor_role not in ROLES:
        raise ProblemError(
            422,
            "validation-error",
            "The request is not valid",
            f"X-Actor-Role: unknown role {x_actor_role!r}",
            errors=[{"field": "X-Actor-Role", "message": "unknown role"}],
        )
    return Actor(subject=x_actor, role=x_actor_role)


def correlation_id(request: Request) -> UUID:
    raw = request.headers.get("x-correlation-id")
    try:
        return UUID(raw) if raw else uuid4()
    except ValueError:
        return uuid4()


def command_context(request: Request, actor: Actor, service: str) -> CommandContext:
    return CommandContext(actor=actor, service=service, correlation_id=correlation_id(request))


def may_see_personal_data(actor: Actor) -> bool:
    return actor.role in PERSONAL_DATA_ROLES


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``: first three and last four digits kept."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"

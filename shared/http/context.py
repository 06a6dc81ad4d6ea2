"""Who is calling and on whose behalf: the principal, its actor and the correlation.

The principal comes from the ``X-Actor`` / ``X-Actor-Role`` / ``X-Actor-Region`` /
``X-Actor-Location`` headers for now; access control (authenticated tokens) replaces
exactly this module's ``current_principal``. Routes depend on ``allow(*roles)`` (who may
call) and check ``Principal.sees_region`` (what they may see), so that the policy has one
place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from fastapi import Depends, Header, Request

from shared.domain.errors import NotFound
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


@dataclass(frozen=True)
class Principal:
    """The caller: who (subject), in which role, and where its reach ends."""

    subject: str
    role: str
    # Dispatcher and regional center: the one region they act in; None = every region.
    region: str | None = None
    # Parts clerk: the stock location they work at.
    location: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> Actor:
        return Actor(subject=self.subject, role=self.role)

    def sees_region(self, region: str | None) -> bool:
        return self.region is None or region == self.region

    @property
    def sees_personal_data(self) -> bool:
        return self.role in PERSONAL_DATA_ROLES


def current_principal(
    x_actor: str = Header(
        default="anonymous", max_length=200, description="Acting user (until tokens)."
    ),
    x_actor_role: str = Header(default="call_center_agent", description="Role the user acts in."),
    x_actor_region: str | None = Header(default=None, max_length=32),
    x_actor_location: str | None = Header(default=None, max_length=200),
) -> Principal:
    if x_actor_role not in ROLES:
        raise ProblemError(
            422,
            "validation-error",
            "The request is not valid",
            f"X-Actor-Role: unknown role {x_actor_role!r}",
            errors=[{"field": "X-Actor-Role", "message": "unknown role"}],
        )
    return Principal(
        subject=x_actor,
        role=x_actor_role,
        region=x_actor_region.lower() if x_actor_region else None,
        location=x_actor_location,
    )


def allow(*roles: str) -> Callable[..., Principal]:
    """A dependency admitting only these roles (403 naming them otherwise)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role not in roles:
            raise ProblemError(
                403,
                "forbidden",
                "Your role may not do this",
                f"role {principal.role!r} may not call this endpoint; "
                f"allowed: {', '.join(sorted(roles))}",
                required_roles=sorted(roles),
            )
        return principal

    return dependency


def require_region(principal: Principal, region: str | None, what: str, ident: str) -> None:
    """Outside the caller's region a resource does not exist for it (404, not 403)."""
    if not principal.sees_region(region):
        raise NotFound(f"{what}_not_found", f"no {what} {ident}")


def current_actor(principal: Principal = Depends(current_principal)) -> Actor:
    return principal.actor


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

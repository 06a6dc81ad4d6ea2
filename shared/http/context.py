"""Who is calling and on whose behalf: the principal, its actor and the correlation.

``current_principal`` authenticates the request (``Authorization: Bearer <JWT>``, or a
machine key as ``X-API-Key`` / ``Authorization: ApiKey <key>``; see shared/http/auth/tokens.py)
and answers 401 without valid credentials. Routes depend on ``allow(*roles)`` (who may
call, 403 otherwise); what they may see is ``Principal.reach`` (shared/kernel/reach.py;
404 outside it), so that the policy has one place. The event actor always comes from
here, never from a request body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated
from uuid import UUID, uuid4

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer

from shared.http.auth.personal_data import mask_phone
from shared.http.auth.tokens import SCOPES, TOKEN_ROLES, Authenticator, InvalidCredentials
from shared.http.problems import ProblemError
from shared.kernel.errors import Forbidden, NotFound
from shared.kernel.events.envelope import Actor, CommandContext
from shared.kernel.reach import Reach

__all__ = ["mask_phone"]

# Every role a route may name: the callers' roles and the platform's own actor.
ROLES = TOKEN_ROLES | {"system"}
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
    # What the credentials were limited to ("*" = everything the role may do).
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> Actor:
        return Actor(subject=self.subject, role=self.role)

    @property
    def reach(self) -> Reach:
        """How far this caller sees (shared/kernel/reach.py)."""
        if self.role == "technician":
            return Reach(region=self.region, technician=self.subject)
        if self.role == "parts_clerk":
            return Reach(region=self.region, location=self.location)
        return Reach(region=self.region)

    def idempotency_scope(self, scope: str) -> str:
        """``scope`` narrowed to this caller — subject and the reach its token gives (role,
        region, location): another caller reusing an Idempotency-Key, or the same person
        with a token for another region, must never be handed the stored response."""
        return f"{scope}:{_caller_tag(self.subject, self.role, self.region, self.location)}"

    def earlier_idempotency_scope(self, scope: str) -> str:
        """The scope keys were stored under before they were narrowed to the reach (the
        subject alone): a retry of a request answered before the upgrade is answered."""
        return f"{scope}:{_subject_tag(self.subject)}"

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    @property
    def sees_personal_data(self) -> bool:
        return self.role in PERSONAL_DATA_ROLES


@lru_cache(maxsize=4096)
def _subject_tag(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


@lru_cache(maxsize=4096)
def _caller_tag(subject: str, role: str, region: str | None, location: str | None) -> str:
    """A short digest of who calls with which reach (the same few callers send most
    requests)."""
    caller = "\0".join((subject, role, region or "", (location or "").casefold()))
    return hashlib.sha256(caller.encode()).hexdigest()[:16]


# Declared for the OpenAPI document (the lock in /docs); the parsing is below.
_bearer = HTTPBearer(auto_error=False, description="A JWT: `ticketline token --role ...`.")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Machine key of call-center software."
)


# A route depending on one of these reads credentials (``needs_credentials``).
CREDENTIAL_SCHEMES: tuple[object, ...] = (_bearer, _api_key)


def _unauthorized(detail: str, error: str | None = None) -> ProblemError:
    challenge = 'Bearer realm="ticketline"'
    if error:
        challenge += f', error="{error}"'
    return ProblemError(
        401,
        "unauthorized",
        "Authentication required",
        detail,
        headers={"WWW-Authenticate": challenge},
    )


def authenticator(request: Request) -> Authenticator:
    """One per app (keys and JWKS loaded once), built from the platform's settings."""
    state = request.app.state
    found: Authenticator | None = getattr(state, "authenticator", None)
    if found is None:
        found = state.authenticator = Authenticator(state.platform.settings)
    return found


async def current_principal(
    request: Request,
    _b: object = Depends(_bearer),
    _k: object = Depends(_api_key),
) -> Principal:
    return principal_of(request)


# For a dependency that authenticates inline (``principal_of``): the same security
# schemes in the OpenAPI document as ``Depends(current_principal)``.
Bearer = Annotated[object, Depends(_bearer)]
ApiKey = Annotated[object, Depends(_api_key)]


def principal_of(request: Request) -> Principal:
    """The caller of ``request`` (authenticated once per request); 401 without valid
    credentials."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    auth = authenticator(request)
    header = request.headers.get("authorization", "").strip()
    scheme, _, credentials = header.partition(" ")
    api_key = request.headers.get("x-api-key")
    given = len(request.headers.getlist("authorization")) + len(
        request.headers.getlist("x-api-key")
    )
    try:
        if given > 1:
            # Two credentials: which one acts would be a guess (and a bad one ignored).
            raise InvalidCredentials("send one credential: `Authorization` or `X-API-Key`")
        if scheme.lower() == "bearer" and credentials.strip():
            claims = auth.verify_token(credentials.strip())
        elif scheme.lower() == "apikey" and credentials.strip():
            claims = auth.verify_api_key(credentials.strip())
        elif api_key:
            claims = auth.verify_api_key(api_key.strip())
        elif header:
            raise InvalidCredentials("use `Authorization: Bearer <token>` or `X-API-Key`")
        else:
            raise _unauthorized("no credentials: send `Authorization: Bearer <token>`")
    except InvalidCredentials as exc:
        raise _unauthorized(str(exc), "invalid_token") from None
    principal = Principal(
        subject=claims.subject,
        role=claims.role,
        region=claims.region,
        location=claims.location,
        scopes=claims.scopes,
    )
    request.state.principal = principal
    return principal


def credentials_expire_at(request: Request) -> float | None:
    """When the request's bearer token stops being accepted (its ``exp`` plus the leeway,
    as verification counts it), for answers that outlive the request — a stream; None for
    an API key, which does not expire."""
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:  # verified already (principal_of): only its expiry is read here
        exp = jwt.decode(credentials.strip(), options={"verify_signature": False})["exp"]
    except (jwt.PyJWTError, KeyError):
        return None
    return float(exp) + authenticator(request).auth.leeway_seconds


def admit(principal: Principal, roles: Collection[str], scope: str | None = None) -> Principal:
    """``principal`` when its role is among ``roles`` (and its credentials carry ``scope``);
    403 naming what is missing otherwise."""
    if principal.role not in roles:
        raise ProblemError(
            403,
            "forbidden",
            "Your role may not do this",
            f"role {principal.role!r} may not call this endpoint; "
            f"allowed: {', '.join(sorted(roles))}",
            required_roles=sorted(roles),
        )
    if scope is not None and not principal.has_scope(scope):
        raise ProblemError(
            403,
            "forbidden",
            "Your credentials lack a scope",
            f"this endpoint needs the scope {scope!r}",
            required_scope=scope,
        )
    return principal


def known_roles(roles: Collection[str], scope: str | None = None) -> frozenset[str]:
    """What a route declares it admits, checked as it is declared: known roles and scope."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: add it to SCOPES (shared/http/auth)")
    return frozenset(roles)


def allow(*roles: str, scope: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only these roles, and (given ``scope``) only credentials that
    carry that scope; 403 naming what is missing otherwise."""
    allowed = known_roles(roles, scope)

    async def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        return admit(principal, allowed, scope)

    return dependency


def every_region(principal: Principal, what: str) -> None:
    """Work that spans every region (a customer's personal data, an import) is for a
    token without a region: one confined to a region (docs/access-control.md) gets 403
    naming ``region``."""
    if principal.region is not None:
        raise Forbidden(
            "region", f"{what} is every region's: a token for {principal.region} may not"
        )


def region_asked(principal: Principal, wanted: str | None) -> str | None:
    """The region a read of the ledger covers (a stream, an export): a regional caller's
    own, whatever it asks for (another one does not exist for it: 404); else the one
    asked for, or every region (None)."""
    region, visible = principal.reach.list_region(wanted)
    if not visible:
        raise NotFound("region_not_found", f"no region {wanted} for this caller")
    return region


def correlation_id(request: Request) -> UUID:
    raw = request.headers.get("x-correlation-id")
    try:
        return UUID(raw) if raw else uuid4()
    except ValueError:
        return uuid4()


def command_context(request: Request, actor: Actor, service: str) -> CommandContext:
    return CommandContext(actor=actor, service=service, correlation_id=correlation_id(request))

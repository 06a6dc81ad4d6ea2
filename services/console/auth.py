"""Sign-in for people: a token pasted once, kept in an HttpOnly, SameSite=Strict cookie.

Every page authenticates the cookie exactly as the APIs authenticate a bearer token
(shared/http/auth/tokens.py) and builds the same ``Principal``; what a page may show is
then decided by the same rules (roles below, ``Principal.reach``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import jwt
from fastapi import Request

from shared.http.auth.tokens import InvalidCredentials
from shared.http.context import Principal, authenticator

COOKIE = "ticketline_console"
LOCALE_COOKIE = "ticketline_console_locale"
# Who may use the console: those who oversee the work (as /compliance, /streams).
CONSOLE_ROLES = frozenset({"auditor", "regional_center", "admin", "dispatcher"})
# Every console page reads tickets; a token limited to other scopes may not use it.
CONSOLE_SCOPE = "tickets:read"


class SignInRequired(Exception):
    """No cookie, or its token is expired or invalid: show the sign-in page."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in")
        self.reason = reason


class ConsoleForbidden(Exception):
    """Signed in, but the role (or the token's scope) may not use the console."""

    def __init__(
        self, principal: Principal, scope: str = CONSOLE_SCOPE, roles: Collection[str] = ()
    ) -> None:
        super().__init__(principal.role)
        self.principal = principal
        # What the page asks (its 403 page says it): the scope, and the roles when fewer
        # than the console's.
        self.scope, self.roles = scope, sorted(roles)


def may_open(principal: Principal, scope: str, roles: Collection[str] | None = None) -> bool:
    """Whether a page whose API needs ``scope`` (and one of ``roles``) is the caller's."""
    return principal.has_scope(scope) and (roles is None or principal.role in roles)


def verify(request: Request, token: str) -> tuple[Principal, int]:
    """(principal, expiry as a Unix time) for a token, or InvalidCredentials."""
    claims = authenticator(request).verify_token(token.strip())
    expires = int(jwt.decode(token.strip(), options={"verify_signature": False})["exp"])
    principal = Principal(
        subject=claims.subject,
        role=claims.role,
        region=claims.region,
        location=claims.location,
        scopes=claims.scopes,
    )
    return principal, expires


def require_console_role(principal: Principal) -> Principal:
    if principal.role not in CONSOLE_ROLES or not principal.has_scope(CONSOLE_SCOPE):
        raise ConsoleForbidden(principal)
    return principal


def signed_in(request: Request) -> Principal:
    """The page's caller (dependency): sign-in page without a valid cookie, 403 page for
    a role that may not use the console."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired()
    try:
        principal, expires = verify(request, token)
    except InvalidCredentials:
        raise SignInRequired("expired") from None
    if time.time() >= expires:  # the verification's leeway is for clocks, not for sessions:
        raise SignInRequired("expired")  # the live stream ends here too (session_alive)
    request.state.session_expires = expires
    request.state.principal = principal
    return require_console_role(principal)


def signed_in_for(
    scope: str, roles: Collection[str] | None = None
) -> Callable[[Request], Principal]:
    """``signed_in``, for a page whose API needs ``scope`` (and one of ``roles``, when the
    API admits fewer than the console: docs/access-control.md): the console shows a
    caller no more than the APIs would."""

    def dependency(request: Request) -> Principal:
        principal = signed_in(request)
        if not may_open(principal, scope, roles):
            raise ConsoleForbidden(principal, scope, roles or ())
        return principal

    return dependency


def session_alive(request: Request) -> bool:
    expires: Any = getattr(request.state, "session_expires", None)
    return expires is None or time.time() < expires

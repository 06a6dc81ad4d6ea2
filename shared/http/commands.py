"""Command routes, the same in every service: one dependency gives a route the platform,
the caller, its ``Idempotency-Key`` and ``If-Match``; ``CommandCall.run`` answers.

    Diagnose = Annotated[
        CommandCall,
        Depends(command_call("intake", "call_center_agent", "dispatcher", scope="tickets:write")),
    ]

    @router.post("/tickets/{ticket_id}/diagnosis", ...)
    async def diagnose_ticket(ticket_id: UUID, body: DiagnoseTicketRequest, call: Diagnose):
        return await call.run(f"diagnose:{ticket_id}", body, lambda conn: ...)

The unit of work given to ``run`` (a function of the connection) runs in one transaction
with the idempotency record: a retry with the same key returns the first answer.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection

from shared.app.executor import Handling, Invocation
from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError
from shared.http.context import (
    ApiKey,
    Bearer,
    Principal,
    admit,
    command_context,
    known_roles,
    principal_of,
)
from shared.http.headers import (
    check_idempotency_key,
    given_once,
    idempotency_key_header,
    if_match_header,
    parse_if_match,
)
from shared.http.idempotency import (
    CommandResponse,
    has_stored_answer,
    run_idempotent,
    to_response,
)
from shared.http.problems import ProblemError
from shared.http.security import rate_refusal


@dataclass(frozen=True)
class CommandCall:
    platform: Platform
    principal: Principal
    service: str
    idempotency_key: str | None
    # What the command handlers get: the service's executor, the invocation, settings.
    handling: Handling
    # The rate limit's 429 for a keyed request: answered unless the key has a stored
    # answer (a retry of work already done is never held back).
    refusal: ProblemError | None = None

    async def run(
        self,
        scope: str,
        body: BaseModel | None,
        command: Callable[[Connection], CommandResponse],
    ) -> JSONResponse:
        """Run ``command`` idempotently under ``scope`` (narrowed to the caller), keyed
        by the request ``body``, and answer with its response.

        Without ``If-Match`` the caller named no version: when another writer (a reactor,
        another replica) appended to the stream between this command's read and its
        append, the command decides again on the stream as it now is — up to
        ``CONFLICT_RETRIES`` times — instead of answering 409 for a version nobody gave."""
        narrowed = self.principal.idempotency_scope(f"{self.service}:{scope}")
        earlier = self.principal.earlier_idempotency_scope(f"{self.service}:{scope}")
        if self.refusal is not None:
            # Over the limit: only a retry with a stored answer gets through, checked by a
            # read so that a refused request takes no writer's turn.
            refusal = self.refusal
            key = self.idempotency_key
            db = self.platform.db
            if key is None or not await has_stored_answer(db, narrowed, key, earlier):
                raise refusal

            def command(_conn: Connection) -> CommandResponse:
                raise refusal  # the stored answer is there: this only runs in a race

        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                response = await run_idempotent(
                    self.platform.db,
                    scope=narrowed,
                    key=self.idempotency_key,
                    request_body=body.model_dump(mode="json") if body is not None else {},
                    keyed=self.platform.personal.request_digest,
                    command=command,
                    now=self.platform.clock.now(),
                    earlier_scope=earlier,
                )
            except ConcurrencyError:
                expected = self.handling.invocation.expected_version
                if expected is not None or attempt == CONFLICT_RETRIES:
                    raise
                continue
            return to_response(response)
        raise AssertionError("unreachable")


# Decisions made again when a concurrent append got in first (no If-Match given).
CONFLICT_RETRIES = 3


def command_call(
    service: str, *roles: str, scope: str | None = None, rate_limit: str | None = None
) -> Callable[..., Awaitable[CommandCall]]:
    """The dependency of a command route: only ``roles`` (with ``scope``) may call it;
    ``rate_limit`` names a per-caller limit (shared/http/security.py).

    One dependency with the checks as plain calls (FastAPI's work per dependency is a
    large share of a small command): the same answers in the same order — 401, 403,
    429 (for a keyed request: after a malformed ``Idempotency-Key`` or ``If-Match``, 422,
    and only when the key has no stored answer), 422 — and the same
    OpenAPI parameters as ``allow``, ``idempotency_key`` and ``expected_version``."""
    allowed = known_roles(roles, scope)

    async def dependency(
        request: Request,
        _b: Bearer,
        _k: ApiKey,
        key: str | None = idempotency_key_header(),
        if_match: str | None = if_match_header(),
    ) -> CommandCall:
        principal = admit(principal_of(request), allowed, scope)
        refusal = rate_refusal(request, rate_limit, principal) if rate_limit else None
        given_once(request, "Idempotency-Key", "If-Match")
        key = check_idempotency_key(key)
        if refusal is not None and key is None:
            raise refusal
        version = parse_if_match(if_match)
        platform: Platform = request.app.state.platform
        invocation = Invocation(
            command_context(request, principal.actor, service), principal.reach, version
        )
        handling = Handling(platform.executor(service), invocation, platform.settings)
        return CommandCall(platform, principal, service, key, handling, refusal)

    return dependency

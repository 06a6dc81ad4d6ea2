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

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection

from shared.app.executor import Handling, Invocation
from shared.app.platform import Platform
from shared.http.context import Principal, allow, command_context
from shared.http.headers import expected_version, idempotency_key
from shared.http.idempotency import CommandResponse, run_idempotent, to_response
from shared.http.security import rate_limited


@dataclass(frozen=True)
class CommandCall:
    platform: Platform
    principal: Principal
    service: str
    idempotency_key: str | None
    # What the command handlers get: the service's executor, the invocation, settings.
    handling: Handling

    async def run(
        self,
        scope: str,
        body: BaseModel | None,
        command: Callable[[Connection], CommandResponse],
    ) -> JSONResponse:
        """Run ``command`` idempotently under ``scope`` (narrowed to the caller), keyed
        by the request ``body``, and answer with its response."""
        response = await run_idempotent(
            self.platform.db,
            scope=self.principal.idempotency_scope(f"{self.service}:{scope}"),
            key=self.idempotency_key,
            request_body=body.model_dump(mode="json") if body is not None else {},
            command=command,
            now=self.platform.clock.now(),
        )
        return to_response(response)


def command_call(
    service: str, *roles: str, scope: str | None = None, rate_limit: str | None = None
) -> Callable[..., Awaitable[CommandCall]]:
    """The dependency of a command route: only ``roles`` (with ``scope``) may call it;
    ``rate_limit`` names a per-caller limit (shared/http/security.py)."""
    gate = (
        rate_limited(rate_limit, *roles, scope=scope) if rate_limit else allow(*roles, scope=scope)
    )

    async def dependency(
        request: Request,
        principal: Principal = Depends(gate),
        key: str | None = Depends(idempotency_key),
        version: int | None = Depends(expected_version),
    ) -> CommandCall:
        platform: Platform = request.app.state.platform
        invocation = Invocation(
            command_context(request, principal.actor, service), principal.reach, version
        )
        handling = Handling(platform.executor(service), invocation, platform.settings)
        return CommandCall(platform, principal, service, key, handling)

    return dependency

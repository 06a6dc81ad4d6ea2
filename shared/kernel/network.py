"""The service network's tree (DOMAIN.md: headquarters → regional centers → service
points): one rule for dispatch's network members and parts' stock locations."""

from __future__ import annotations

from dataclasses import dataclass

from shared.kernel.errors import InvalidCommand, RuleViolation

HEADQUARTERS, REGIONAL_CENTER, SERVICE_POINT = "headquarters", "regional_center", "service_point"
PARENT_LEVEL: dict[str, str | None] = {
    HEADQUARTERS: None,
    REGIONAL_CENTER: HEADQUARTERS,
    SERVICE_POINT: REGIONAL_CENTER,
}


def id_key(member_id: str) -> str:
    """Network ids compare without case in every service: ``SP-HZ-01`` and ``sp-hz-01``
    are one member (dispatch's service point, parts' stock location)."""
    return member_id.strip().lower()


def id_lock(kind: str, member_id: str) -> str:
    """The lock a registration holds on its id in any case until it commits: two replicas
    registering ``SP-1`` and ``sp-1`` at once write two streams, and the later must see
    the earlier's row to refuse it."""
    return f"{kind}-id:{id_key(member_id)}"


def refuse_registered(registered_as: str | None, *, rule: str, field: str, what: str) -> None:
    """One member per ``id_key``: ``registered_as``, the spelling the id is registered
    under already (in any case), refuses another registration — 409 ``rule``, its detail
    naming ``field``."""
    if registered_as is not None:
        raise RuleViolation(
            rule, f"{field}: {what} {registered_as} is registered (ids compare without case)"
        )


@dataclass(frozen=True)
class Parent:
    """The member a ``parent_id`` names, as registered (``level`` None: not registered)."""

    id: str
    level: str | None
    region: str | None


def region_in_tree(
    member_id: str,
    level: str,
    region: str | None,
    parent_id: str | None,
    parent: Parent | None,
    *,
    what: str,
) -> str | None:
    """The region of a member at ``level`` under ``parent_id``, or the refusal: headquarters
    has no parent and serves every region (none of its own); a regional center names its
    region, its parent (optional) is headquarters; a service point's parent is a regional
    center, whose region it is in (``region`` left out: the parent's). ``what`` names a
    member in messages (a service point, a location)."""
    if level == HEADQUARTERS:
        if parent_id is not None:
            raise InvalidCommand("parent_id", "headquarters has no parent")
        if region is not None:
            raise InvalidCommand("region", "headquarters serves every region: it has none")
        return None
    if parent_id is None:
        if level == SERVICE_POINT:
            raise InvalidCommand(
                "parent_id", "a service_point's parent is a regional_center: give parent_id"
            )
    elif parent_id == member_id:
        raise InvalidCommand("parent_id", "a member cannot be its own parent")
    elif parent is None or parent.level is None:
        raise InvalidCommand("parent_id", f"no {what} {parent_id}")
    elif parent.level != PARENT_LEVEL[level]:
        raise RuleViolation(
            "parent_level",
            f"parent_id: a {level}'s parent is a {PARENT_LEVEL[level]}; "
            f"{parent.id} is a {parent.level}",
        )
    elif level == SERVICE_POINT and parent.region is not None:
        if region is not None and region.lower() != parent.region.lower():
            raise RuleViolation(
                "parent_region",
                f"region: a service point is in its regional center's region; "
                f"{parent.id} serves {parent.region}, not {region}",
            )
        region = parent.region
    if region is None:
        raise InvalidCommand("region", f"a {level} serves one region")
    return region

"""How far a caller sees, and where a resource sits: one rule for every service.

Outside its reach a resource does not exist for the caller (404, never 403): a regional
caller sees its region, a technician the tickets assigned to them, a parts clerk its
location's stock. Commands check it on the state their decision reads; lists filter by it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a resource sits. None: not tied to any (visible to every caller's reach)."""

    region: str | None = None
    # The technician a ticket is assigned to (None: not yet dispatched).
    assignee: str | None = None
    # The stock locations it sits at (a requisition: its requesting and source locations);
    # empty: not tied to a location.
    locations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reach:
    """How far a caller sees. ``region`` None: every region; ``technician`` set: only what
    is assigned to that technician; ``location`` set (a parts clerk): only what sits at
    that stock location."""

    region: str | None = None
    technician: str | None = None
    location: str | None = None

    def allows(self, scope: Scope) -> bool:
        if self.technician is not None and scope.assignee != self.technician:
            return False
        return self.allows_location(scope.locations) and self.allows_region(scope.region)

    def allows_region(self, region: str | None) -> bool:
        return self.region is None or region is None or region == self.region

    def list_region(self, asked: str | None) -> tuple[str | None, bool]:
        """A list's region filter: (the region its rows come from — the caller's own when
        it has one —, whether anything can match): asking for a region outside the reach
        lists nothing, never that region's rows."""
        if self.region is None:
            return asked, True
        return self.region, asked in (None, self.region)

    def allows_location(self, locations: tuple[str, ...]) -> bool:
        """Location ids compare case-insensitively (docs/parts.md)."""
        if self.location is None or not locations:
            return True
        return self.location.lower() in {location.lower() for location in locations}


EVERYWHERE = Reach()
NOWHERE_IN_PARTICULAR = Scope()

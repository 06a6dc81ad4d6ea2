"""Every importable kind, as the services declare them (``ServiceModule.imports``)."""

from __future__ import annotations

from shared.app.importing.kinds import Kind
from shared.app.importing.source import Refusal


def all_kinds() -> dict[str, Kind]:
    from shared.app.registry import SERVICES, service

    return {kind.name: kind for name in SERVICES for kind in service(name).imports}


def find_kind(name: str) -> Kind:
    kinds = all_kinds()
    found = kinds.get(name.replace("-", "_"))
    if found is None:
        raise Refusal(f"unknown kind {name!r}; choose from {', '.join(kinds)}")
    return found

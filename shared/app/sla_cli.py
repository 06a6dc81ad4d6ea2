"""``ticketline sla what-if``: a period's tickets recomputed under another SLA policy,
beside the terms they run on — read only (docs/sla.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from shared.app.config import Settings
from shared.http.problems import field_path
from shared.kernel.errors import DomainError
from shared.kernel.events.sla import (
    CalendarDescription,
    DefinableCalendarId,
    SlaPolicyDescription,
)
from shared.kernel.events.tickets import ShortText
from shared.kernel.text import DuplicateKey, invalid_text_reason, unique_keys

T = TypeVar("T")
CALENDARS = TypeAdapter(dict[DefinableCalendarId, CalendarDescription])
JSON_VALUE = TypeAdapter(Any)
REASON = TypeAdapter(ShortText | None)  # as services/dispatch/sla_schemas.py: PolicyRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sla_command", required=True)
    what_if = sub.add_parser(
        "what-if",
        help="recompute the tickets received in a period under another policy; writes nothing",
    )
    what_if.add_argument(
        "--policy",
        required=True,
        help="YAML or JSON file: a policy description (as PUT /sla-policies/{id} takes), or "
        "{policy: …, calendars: {id: calendar description}}",
    )
    what_if.add_argument("--from", dest="from_", required=True, help="received from (ISO 8601)")
    what_if.add_argument("--to", required=True, help="received before (ISO 8601)")
    what_if.add_argument("--at", default=None, help="the clocks' instant (default: now)")
    what_if.add_argument("--format", choices=("text", "json"), default="text")


def instant(value: str) -> datetime:
    """An ISO 8601 instant with a timezone; a bare date is midnight UTC."""
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    found = datetime.fromisoformat(value)
    if found.tzinfo is None:
        raise ValueError(f"{value}: give a timezone, e.g. 2026-11-20T10:00:00Z")
    return found


def load_terms(path: Path) -> tuple[SlaPolicyDescription, dict[str, CalendarDescription]]:
    """The policy (and calendars) of a what-if file, held to the rules their PUT bodies are:
    text a database can store, no key given twice, no key the API would not take."""
    data = _read_mapping(path)
    _stored_text(data, ())
    wrapped = "policy" in data
    if wrapped and (unknown := sorted(map(str, set(data) - {"policy", "calendars"}))):
        raise ValueError(f"invalid policy file: {unknown[0]}: unknown key (policy, calendars)")
    policy = data["policy"] if wrapped else {k: v for k, v in data.items() if k != "calendars"}
    at = ("policy",) if wrapped else ()
    if isinstance(policy, dict) and "reason" in policy:
        # A PUT body as it is: its reason defines nothing here, but is held to the PUT's rule.
        policy = dict(policy)
        _valid((*at, "reason"), REASON.validate_python, policy.pop("reason"))
    return (
        _valid(at, SlaPolicyDescription.model_validate, policy),
        _valid(("calendars",), CALENDARS.validate_python, data.get("calendars") or {}),
    )


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=unique_keys)
        else:
            data = _read_yaml(path, text)
    except DuplicateKey as exc:
        raise ValueError(f"invalid policy file: {exc.key}: given more than once") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping expected")
    return data


def _read_yaml(path: Path, text: str) -> Any:
    import yaml  # type: ignore[import-untyped]  # (only here: every command starts faster)

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
        """YAML's safe loader refusing a key given twice (it keeps the last, silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            # Keys as written (a merge key, ``<<: *anchor``, is no key of the mapping).
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        raise DuplicateKey(str(key.value))
                    seen.add((key.tag, key.value))
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def _stored_text(value: Any, at: tuple[str, ...]) -> None:
    """Every text in the file is text the API would take (no control character)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _stored_text(key, at)
            _stored_text(inner, (*at, str(key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _stored_text(inner, (*at, str(index)))
    elif isinstance(value, str) and (reason := invalid_text_reason(value)) is not None:
        raise ValueError(f"invalid policy file: {field_path(at) or 'file'}: {reason}")


def _valid(at: tuple[str, ...], validate: Callable[[Any], T], value: Any) -> T:
    """``validate(value)``, its refusals named by their path in the file (``calendars.24x7``,
    as the HTTP what-if's 422 names them) instead of pydantic's own report."""
    try:
        return validate(value)
    except ValidationError as exc:
        refused = "; ".join(
            f"{field_path((*at, *e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid policy file: {refused}") from None


async def report(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from shared.app.platform import Platform
    from shared.readmodels.sla import TermsReader
    from shared.readmodels.sla_whatif import candidate, clocks_at, what_if

    policy, calendars = load_terms(Path(args.policy))
    chosen = candidate(policy, calendars)
    period = (instant(args.from_), instant(args.to))
    asked = instant(args.at) if args.at else None
    platform = Platform.from_settings(settings)
    sla = settings.sla
    try:
        at = clocks_at(asked, platform.clock.now())
        return await platform.db.read(
            lambda c: what_if(
                TermsReader.configured(c, platform.store, sla),
                chosen,
                period,
                at,
            )
        )
    finally:
        await platform.close()


def _pair(group: dict[str, Any], key: str) -> str:
    now, then, delta = group["current"][key], group["what_if"][key], group["delta"][key]
    if now is None and then is None:
        return "-"
    shown = f"{now if now is not None else '-'} → {then if then is not None else '-'}"
    return f"{shown} ({delta:+g})" if delta is not None else shown


def render_text(result: dict[str, Any]) -> str:
    lines = [
        f"What-if: {result['policy']} — tickets received {result['received_from']:%Y-%m-%d %H:%M %Z}"
        f" … {result['received_to']:%Y-%m-%d %H:%M %Z}, clocks at {result['at']:%Y-%m-%d %H:%M %Z}",
        "rates in %: now → what-if (difference)",
        f"{'':24} {'tickets':>7}  {'response SLA':<24} {'resolution SLA':<24} "
        f"{'response breaches':<24} resolution breaches",
    ]
    rows = [("total", result["total"])]
    rows += [(f"region {g['key']}", g) for g in result["regions"]]
    rows += [(f"point {g['key'] or '(none)'}", g) for g in result["service_points"]]
    for label, g in rows:
        lines.append(
            f"{label[:24]:24} {g['current']['tickets']:>7}  "
            f"{_pair(g, 'response_sla_rate'):<24} {_pair(g, 'resolution_sla_rate'):<24} "
            f"{_pair(g, 'response_breach_rate'):<24} {_pair(g, 'resolution_breach_rate')}"
        )
    return "\n".join(lines)


def _json_value(value: object) -> str:
    # As the HTTP answer writes it (pydantic): UTC as "Z".
    return JSON_VALUE.dump_python(value, mode="json")  # type: ignore[no-any-return]


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(report(settings, args))
    except (ValueError, KeyError, OSError) as exc:
        print(f"sla what-if: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        field = str(getattr(exc, "field", ""))  # InvalidCommand: the option or policy key
        named = {"at": "--at", "received_from": "--from", "received_to": "--to"}.get(field, field)
        print(f"sla what-if: {f'{named}: ' if named else ''}{exc.detail}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result, default=_json_value, indent=2))
    else:
        print(render_text(result))
    return 0

"""Personal data at the HTTP edge: which fields are personal (derived from the payload
models' ``Personal`` declarations — shared/kernel/personal.py — the one list), masking for
roles that do not need them, and a logging filter that keeps them out of every log line
(docs/personal-data.md)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from shared.kernel.events.registry import all_payload_classes
from shared.kernel.personal import MARKERS, Kind, is_sealed, personal_fields

MASK = "***"

# The read models' personal columns (ticket_state) and what they hold.
READ_MODEL_COLUMNS: Mapping[str, Kind] = {
    "customer_name": "name",
    "customer_phone": "phone",
    "address_line": "hidden",
}


@cache
def personal_paths() -> dict[str, Kind]:
    """Dotted path → kind of every personal field of every event payload."""
    found: dict[str, Kind] = {}
    for cls in all_payload_classes().values():
        found.update((f.dotted, f.kind) for f in personal_fields(cls))
    return found


@cache
def personal_data_fields() -> tuple[str, ...]:
    """Every personal field: payload paths and read-model columns."""
    return (*sorted(personal_paths()), *READ_MODEL_COLUMNS)


# Dotted paths in event payloads and read models that hold personal data.
PERSONAL_DATA_FIELDS: tuple[str, ...] = personal_data_fields()


def shown_in_clear(kind: Kind, sees_personal_data: bool) -> bool:
    """Names and free text go to every reader of a ticket (needed to serve the customer);
    phone, street and postcode only to roles that phone or visit (PERSONAL_DATA_ROLES)."""
    return sees_personal_data or kind in ("name", "text")


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``: at most the first three and the last four digits
    kept, never fewer than four hidden (``12345678`` → ``****5678``, a short number does
    not show all but one digit), and a leading ``+`` (``+8613812345678`` is another number
    than ``8613812345678``)."""
    plus = "+" if phone.lstrip().startswith("+") else ""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) <= 7:
        return plus + "*" * len(digits)
    hidden = max(4, len(digits) - 7)
    prefix = len(digits) - hidden - 4
    return f"{plus}{digits[:prefix]}{'*' * hidden}{digits[-4:]}"


def mask_value(kind: Kind, value: Any) -> Any:
    """A clear value as a role that sees it masked gets it; sealed values and the
    ``[erased]`` / ``[unreadable]`` markers stay as they are (they show nothing)."""
    if not isinstance(value, str) or value in MARKERS or is_sealed(value):
        return value
    if kind == "phone":
        return mask_phone(value)
    if kind == "hidden":
        return MASK
    return value


@cache
def _masked_keys() -> dict[tuple[str | None, str], Kind]:
    """(parent key, key) → kind, for the fields masked for roles without personal data."""
    found: dict[tuple[str | None, str], Kind] = {}
    for path, kind in personal_paths().items():
        if kind in ("phone", "hidden"):
            parts = path.split(".")
            found[(parts[-2] if len(parts) > 1 else None, parts[-1])] = kind
    return found


def mask_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An event payload with phone numbers and street addresses masked, at any depth."""
    masked = _masked_keys()

    def walk(value: Any, key: str | None, parent: str | None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k, key) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, None, parent) for v in value]
        if key is None:
            return value
        kind = masked.get((parent, key))
        if kind is None and "phone" in key:
            kind = "phone"
        return value if kind is None else mask_value(kind, value)

    return walk(payload, None, None)  # type: ignore[no-any-return]


def _leaf_names() -> list[str]:
    leaves = {path.rsplit(".", 1)[-1] for path in personal_paths()} | set(READ_MODEL_COLUMNS)
    return sorted(leaves, key=lambda name: (-len(name), name))


# A phone-like run of 7–15 digits (spaces/dashes allowed), not part of an id or a word.
_PHONE = re.compile(r"(?<![\w-])\+?\d(?:[ -]?\d){6,14}(?![\w-])")
_NAMES = "|".join(_leaf_names())
_JSON_FIELD = re.compile(rf'("(?:{_NAMES})"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_KV_FIELD = re.compile(rf"(\b(?:{_NAMES})=)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    text = _JSON_FIELD.sub(rf'\1"{MASK}"', text)
    text = _KV_FIELD.sub(rf"\1{MASK}", text)
    return _PHONE.sub(MASK, text)


class PersonalDataFilter(logging.Filter):
    """Rewrites each record's message with personal fields and phone numbers redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_filter() -> None:
    """Attach the filter to every handler configured so far (root and loggers with their
    own, like uvicorn's), once. Call again after something configures new handlers."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, PersonalDataFilter) for f in handler.filters):
                handler.addFilter(PersonalDataFilter())

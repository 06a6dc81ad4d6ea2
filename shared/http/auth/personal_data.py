"""Personal data: which fields are personal (docs/personal-data.md), masking for roles that
do not need them, and a logging filter that keeps them out of every log line."""

from __future__ import annotations

import logging
import re
from typing import Any

# Dotted paths in event payloads and read models that hold personal data.
PERSONAL_DATA_FIELDS: tuple[str, ...] = (
    "customer.name",
    "customer.phone",
    "address.line",
    "address.postcode",
    "customer_name",
    "customer_phone",
    "address_line",
)
MASK = "***"


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``: first three and last four digits kept."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_address_line(line: str | None) -> str | None:
    """The street address goes entirely; city and region stay (they route the work)."""
    return None if line is None else MASK


def mask_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An event payload with phone numbers and street addresses masked, at any depth."""

    def walk(value: Any, key: str | None, parent: str | None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k, key) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, None, parent) for v in value]
        if not isinstance(value, str):
            return value
        if key is not None and "phone" in key:
            return mask_phone(value)
        if parent == "address" and key in {"line", "postcode"}:
            return MASK
        return value

    return walk(payload, None, None)  # type: ignore[no-any-return]


# A phone-like run of 7–15 digits (spaces/dashes allowed), not part of an id or a word.
_PHONE = re.compile(r"(?<![\w-])\+?\d(?:[ -]?\d){6,14}(?![\w-])")
_JSON_FIELD = re.compile(
    r'("(?:phone|customer_phone|line|address_line|postcode)"\s*:\s*)"[^"]*"', re.IGNORECASE
)
_KV_FIELD = re.compile(r"(\b(?:phone|customer_phone|address_line|postcode)=)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    text = _JSON_FIELD.sub(rf'\1"{MASK}"', text)
    text = _KV_FIELD.sub(rf"\1{MASK}", text)
    return _PHONE.sub(MASK, text)


class PersonalDataFilter(logging.Filter):
    """Rewrites each record's message with phone numbers and address fields redacted."""

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

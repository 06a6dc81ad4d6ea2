"""The forms of text fields checked by a regular expression, said in words: a refusal
names what is expected ("a phone number: …"), not the expression (pydantic's message
quotes it, which helps a developer and no call-center agent)."""

from __future__ import annotations

from typing import Any

_WORDS: dict[str, str] = {}


def worded(pattern: str, words: str) -> str:
    """``pattern``, unchanged (the published schemas hold it), its form in ``words``."""
    _WORDS[pattern] = words
    return pattern


def error_message(error: Any) -> str:
    """A pydantic error's message, a pattern mismatch in words where they are known."""
    if error.get("type") == "string_pattern_mismatch":
        words = _WORDS.get(str((error.get("ctx") or {}).get("pattern")))
        if words is not None:
            return f"expected {words}"
    message = str(error.get("msg", "invalid"))
    # A validator's own words, without pydantic's prefix ("Value error, a month as …").
    return message.removeprefix("Value error, ") if error.get("type") == "value_error" else message

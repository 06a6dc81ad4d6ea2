"""Text the platform accepts and text it writes line by line.

*Valid text* is what both databases store as text: PostgreSQL's ``text`` cannot hold NUL
(U+0000), and no UTF-8 encoder accepts a lone surrogate (U+D800–U+DFFF), which JSON's
``\\ud800`` escapes can produce. Nor does it hold the other control characters (C0 but
tab, line feed and carriage return; DEL; C1 but NEL): no name, address or note needs them,
and a terminal or log viewer showing a stored ESC (U+001B) or CSI would act on it. Every
input — request bodies, query and path values, the headers the services read, token
claims, imported rows (their VT and FF read as line breaks) — is checked against this one
rule before any work starts (shared/http/validation.py, shared/http/auth/tokens.py).

*JSON lines* (``ticketline subscribe``, ``/audit/export?format=jsonl``, SSE ``data:``
lines) must stay one record per line for consumers that split lines the way Unicode
does (Python's ``str.splitlines``, JavaScript line terminators): JSON escapes the C0
control characters already, but leaves U+0085 (NEL), U+2028 and U+2029 raw. Escaping
them keeps every line a valid JSON text with the same value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# NUL, the other C0 controls but tab/LF/CR, DEL, the C1 controls but NEL (a line separator:
# written escaped, below), and every UTF-16 surrogate code point (a str holds one only when
# it is unpaired). A terminal acts on ESC and on CSI (U+009B) alike.
_INVALID_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
# Line separators that JSON leaves raw but str.splitlines() and others split on.
_LINE_SEPARATORS = re.compile("[\x85\u2028\u2029]")


def invalid_text_reason(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    found = _INVALID_TEXT.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character (U+0000)"
    if char <= "\x9f":
        return f"contains a control character (U+{ord(char):04X})"
    return f"contains an unpaired surrogate (U+{ord(char):04X})"


def legacy_line_breaks(value: str) -> str:
    """Vertical tab and form feed as the line breaks older systems meant by them (FileMaker
    writes a line break in a field as VT): imported rows keep their text."""
    return value.replace("\x0b", "\n").replace("\x0c", "\n")


def unprintable_reason(value: str) -> str | None:
    """Why ``value`` cannot name who acted (a token's subject, an import's operator): not
    storable text, or a control character — C0, DEL and C1 (NEL among them: a line break
    to some log readers); None when it can."""
    if (reason := invalid_text_reason(value)) is not None:
        return reason
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in value):
        return "contains a control character"
    return None


def check_text(value: str) -> str:
    """A pydantic ``AfterValidator``: the value, or ValueError naming what is wrong."""
    reason = invalid_text_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def escape_line_separators(text: str) -> str:
    """``text`` (JSON) with U+0085, U+2028 and U+2029 written as ``\\uXXXX`` escapes. Only
    valid inside JSON strings, where those characters can only occur."""
    return _LINE_SEPARATORS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class DuplicateKey(ValueError):
    """A JSON object giving one key twice: readers disagree on which value holds (Python
    keeps the last, SQL's ``json_extract`` the first), so it is no input to guess at."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} given more than once in its object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` refusing a key given twice."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


# Where a key may be: a string's closing quote, then a colon. Strings that hold such text
# only count more, which sends the line to the second reading (never misses a repeat).
_KEY_END = re.compile(r'"\s*:')


def loads_unique(text: str) -> Any:
    """``text`` read by orjson, refusing a key given twice (``DuplicateKey``) as
    ``unique_keys`` does; read a second time only when the text has more places a key may
    end than the document has keys (then one of them may be a repeat)."""
    value = orjson.loads(text)
    if len(_KEY_END.findall(text)) != _count_keys(value):
        json.loads(text, object_pairs_hook=unique_keys)
    return value


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value)
    return 0

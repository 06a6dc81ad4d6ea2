"""Personal data in event payloads: which fields hold it (declared once, on the payload
models), the stored form of those fields, and the words shown in their place.

A payload model marks a personal field with ``Personal`` in its annotation::

    class Customer(Part):
        name: Annotated[ShortText, Personal("name")]
        phone: Annotated[Phone, Personal("phone")]

The ledger stores every personal field sealed — ``pd1.<customer id>.<ciphertext>``,
encrypted with that customer's data key (shared/eventstore/personal) — so the hash chain
covers ciphertext and erasing the key erases the value everywhere. Everything else here
is pure: the declarations, the token shape, and how to read and replace values by path.
``personal_fields(cls)`` is the one list masking, the log filter, sealing and subject
access all read (docs/personal-data.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

# What a personal field shows once its customer's data key is destroyed, or unreadable.
ERASED = "[erased]"
UNREADABLE = "[unreadable]"
MARKERS = frozenset({ERASED, UNREADABLE})

SEALED_PREFIX = "pd1."
# pd1.<customer id: a UUID>.<base64url of nonce ‖ ciphertext ‖ tag, unpadded>
SEALED = re.compile(
    r"^pd1\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.([A-Za-z0-9_-]{38,})$"
)

# The validation context of payloads read back from the ledger (``typed_payload``): there a
# personal field may hold its sealed form or a marker. Request bodies never get it.
STORED: dict[str, bool] = {"stored": True}


def is_stored_context(context: object) -> bool:
    """Whether a validation runs on a payload read back from the ledger (``STORED``)."""
    return context is STORED or (isinstance(context, dict) and bool(context.get("stored")))


# name, phone: who the customer is (identity; the phone is searchable by a blind index).
# hidden: shown only to roles that see personal data (street, postcode).
# text: free text that may quote the customer; shown to every reader of the ticket.
Kind = Literal["name", "phone", "hidden", "text"]


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX) and bool(SEALED.match(value))


def sealed_customer(value: str) -> str | None:
    """The customer whose key seals ``value``; None when it is not a sealed token."""
    found = SEALED.match(value) if value.startswith(SEALED_PREFIX) else None
    return found.group(1) if found else None


def marker_refusal(value: object) -> str | None:
    """Why a personal value given is refused: a marker would read as an erasure (the
    tickets export leaves such a ticket out, staff see an erased customer), a sealed
    token as data no key opens."""
    if isinstance(value, str) and value.strip().lower() in MARKERS:
        return f"{value.strip()} is what erased data shows: not a value to give"
    if isinstance(value, str) and is_sealed(value.strip()):  # copied from an export
        return "a sealed value (pd1.…) as the ledger stores it: give the clear value"
    return None


@dataclass(frozen=True)
class Personal:
    """Annotation marker of a personal field (and, read from the ledger, its validator:
    the sealed form and the markers pass where the clear value's constraints would not)."""

    kind: Kind = "text"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = handler(source)

        def validate(value: Any, next_: Any, info: ValidationInfo) -> Any:
            # On every personal value of every event a fold reads (``typed_payload``): the
            # context by identity first (an ABC isinstance took a third of the call).
            context = info.context
            stored = context is STORED or (isinstance(context, dict) and context.get("stored"))
            if stored and isinstance(value, str) and (value in MARKERS or is_sealed(value)):
                return value
            clear = next_(value)
            if (refused := marker_refusal(clear)) is not None:
                raise ValueError(refused)
            return clear

        # A wrap validator keeps the clear value's JSON Schema (the API documents that).
        return core_schema.with_info_wrap_validator_function(validate, inner)


Path = tuple[str, ...]


@dataclass(frozen=True)
class PersonalField:
    path: Path
    kind: Kind

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _marker(annotation: Any) -> Personal | None:
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            if isinstance(meta, Personal):
                return meta
        return _marker(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            if (found := _marker(arg)) is not None:
                return found
    return None


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """Nested models a field holds (``Customer``, ``Customer | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif get_origin(annotation) in (Annotated, Union, UnionType):
        for arg in get_args(annotation):
            yield from _models(arg)


@cache
def personal_fields(model: type[BaseModel]) -> tuple[PersonalField, ...]:
    """Every personal field of ``model``, nested models included, in declaration order."""
    found: list[PersonalField] = []
    for name, info in model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, Personal)), None)
        marker = marker or _marker(info.annotation)
        if marker is not None:
            found.append(PersonalField((name,), marker.kind))
            continue
        for nested in _models(info.annotation):
            found += [PersonalField((name, *f.path), f.kind) for f in personal_fields(nested)]
    return tuple(found)


# A model's personal fields as a tree: key → kind (a personal field) or a subtree.
Tree = dict[str, "Kind | Tree"]


@cache
def personal_tree(model: type[BaseModel]) -> Tree:
    tree: Tree = {}
    for f in personal_fields(model):
        node = tree
        for key in f.path[:-1]:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[f.path[-1]] = f.kind
    return tree


def map_personal(
    body: dict[str, Any], tree: Tree, fn: Callable[[Kind, str], Any]
) -> dict[str, Any]:
    """A copy of ``body`` with ``fn(kind, value)`` in place of each personal text value
    (copy on write: branches without personal fields are shared). One pass, no paths."""
    out = dict(body)
    for key, node in tree.items():
        value = out.get(key)
        if isinstance(node, dict):
            if isinstance(value, dict):
                out[key] = map_personal(value, node, fn)
        elif isinstance(value, str):
            out[key] = fn(node, value)
    return out


def personal_values(body: dict[str, Any], tree: Tree) -> Iterator[tuple[Kind, str]]:
    """(kind, value) of each personal text value in ``body``."""
    for key, node in tree.items():
        value = body.get(key)
        if isinstance(node, dict):
            if isinstance(value, dict):
                yield from personal_values(value, node)
        elif isinstance(value, str):
            yield node, value


def get_path(body: Mapping[str, Any], path: Path) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@cache
def identity_paths(model: type[BaseModel]) -> tuple[Path, Path] | None:
    """Where ``model`` holds the customer's name and phone (who the customer is)."""
    by_kind = {f.kind: f.path for f in personal_fields(model)}
    if "name" not in by_kind or "phone" not in by_kind:
        return None
    return by_kind["name"], by_kind["phone"]


def replace_paths(body: dict[str, Any], values: Mapping[Path, Any]) -> dict[str, Any]:
    """A copy of ``body`` with the values at ``values``' paths replaced (copy on write: the
    untouched branches are shared)."""
    out = dict(body)
    nested: dict[str, dict[Path, Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            out[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for key, inner in nested.items():
        if isinstance(out.get(key), dict):
            out[key] = replace_paths(out[key], inner)
    return out


def normalise_name(name: str) -> str:
    """A name as identity compares it: case, width and spacing ignored."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())

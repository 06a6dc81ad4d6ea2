"""The published event contract: a JSON Schema per event type and schema version, and an
AsyncAPI document for the Kafka topics, generated from the pydantic models.

A committed schema file is frozen: changing a payload model means bumping its
``schema_version`` (with an upcaster from the old version in ``shared/kernel/events/registry.py``)
and writing the new file; the old file stays for consumers of older events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.registry import TOPIC_FAMILY_BY_STREAM_TYPE, all_payload_classes
from shared.kernel.personal import ERASED, personal_fields

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "docs" / "contract"


def schema_filename(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}.schema.json"


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


SEALED_DEF = {
    "type": "string",
    "pattern": r"^(pd1\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\."
    r"[A-Za-z0-9_-]{38,}|\[erased\])$",
    "description": "A personal field as stored and published: `pd1.<customer id>.<AES-GCM "
    "ciphertext, base64url>` sealed with the customer's data key, or `" + ERASED + "` "
    "(recorded after the customer's erasure). Clear values only through the APIs, for roles "
    "that may see them (docs/personal-data.md).",
}


def _node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` (direct, or inside an optional's ``anyOf``) to its definition."""
    refs = [node] + [n for n in node.get("anyOf", []) if "$ref" in n]
    for candidate in refs:
        if "$ref" in candidate:
            return schema["$defs"][candidate["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return node


def seal_personal_fields(schema: dict[str, Any], cls: type[EventPayload]) -> dict[str, Any]:
    """The payload's schema as published: each personal field also admits its sealed form."""
    fields = personal_fields(cls)
    if not fields:
        return schema
    for f in fields:
        parent = schema
        for key in f.path[:-1]:
            parent = _node(schema, parent["properties"][key])
        leaf = parent["properties"][f.path[-1]]
        if "x-personal" in leaf:
            continue
        sealed = {"$ref": "#/$defs/SealedPersonalData"}
        if "anyOf" in leaf:
            leaf["anyOf"].append(sealed)
        else:
            clear = {k: v for k, v in leaf.items() if k not in ("title", "description")}
            for k in clear:
                del leaf[k]
            leaf["anyOf"] = [clear, sealed]
        leaf["x-personal"] = f.kind
    schema.setdefault("$defs", {})["SealedPersonalData"] = SEALED_DEF
    schema["x-personal-fields"] = [f.dotted for f in fields]
    return schema


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema of the current version of every event type."""
    out = {}
    for event_type, cls in all_payload_classes().items():
        schema = seal_personal_fields(cls.model_json_schema(), cls)
        schema["$id"] = (
            f"https://ticketline.dev/contract/events/{schema_filename(event_type, cls.schema_version)}"
        )
        schema["x-event-type"] = event_type
        schema["x-schema-version"] = cls.schema_version
        schema["x-stream-type"] = cls.stream_type
        out[schema_filename(event_type, cls.schema_version)] = schema
    envelope = EventEnvelope.model_json_schema()
    envelope["$id"] = "https://ticketline.dev/contract/events/envelope.schema.json"
    out["envelope.schema.json"] = envelope
    return out


_ORDER_AND_DELIVERY = (
    "Keyed by stream id: all events of one stream (one ticket) go to one partition, in "
    "stream-version order. Across streams there is no order. Delivery is at least once: "
    "deduplicate by (stream_id, stream_version) or event_id."
)


def _message(event_type: str, cls: type[EventPayload]) -> dict[str, Any]:
    payload_ref = f"events/{schema_filename(event_type, cls.schema_version)}"
    return {
        "name": event_type,
        "title": event_type,
        "summary": (cls.__doc__ or event_type).strip().splitlines()[0],
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "event_type": {"type": "string", "const": event_type},
                "schema_version": {"type": "string"},
                "event_id": {"type": "string", "format": "uuid"},
                "region": {"type": "string", "description": "Ticket's region; empty if none."},
                "stream_type": {"type": "string", "const": cls.stream_type},
            },
        },
        "payload": {
            "allOf": [
                {"$ref": "events/envelope.schema.json"},
                {"properties": {"payload": {"$ref": payload_ref}}},
            ]
        },
        "bindings": {
            "kafka": {"key": {"type": "string", "description": "The stream id (ticket id)."}}
        },
    }


def _channel(address: str, event_types: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "description": _ORDER_AND_DELIVERY,
        "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in sorted(event_types)},
        "bindings": {
            "kafka": {
                "partitions": 6,
                "topicConfiguration": {"retention.ms": -1, "cleanup.policy": ["delete"]},
            }
        },
    }


def asyncapi(prefix: str = "ticketline") -> dict[str, Any]:
    classes = all_payload_classes()
    families: dict[str, list[str]] = {}
    for event_type, cls in classes.items():
        family = TOPIC_FAMILY_BY_STREAM_TYPE.get(cls.stream_type, cls.stream_type)
        families.setdefault(family, []).append(event_type)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ticketline events",
            "version": "1.0.0",
            "description": "Every fact recorded by Ticketline, published from the ledger's "
            "outbox. Regional centers subscribe with a consumer group and may filter on the "
            "`region` header without decoding the body.",
        },
        "defaultContentType": "application/json",
        "channels": {
            family: _channel(f"{prefix}.{family}", types)
            for family, types in sorted(families.items())
        },
        "operations": {
            f"receive_{family}": {"action": "receive", "channel": {"$ref": f"#/channels/{family}"}}
            for family in sorted(families)
        },
        "components": {"messages": {t: _message(t, cls) for t, cls in classes.items()}},
    }


def write_contract(directory: Path = CONTRACT_DIR, *, force: bool = False) -> list[str]:
    """Write missing schema files (never overwrite a frozen one unless ``force``) and the
    AsyncAPI document; returns the files written."""
    written = []
    (directory / "events").mkdir(parents=True, exist_ok=True)
    for name, schema in event_schemas().items():
        path = directory / "events" / name
        text = render_json(schema)
        frozen = name != "envelope.schema.json"
        if path.exists() and frozen and not force:
            continue
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(str(path))
    path = directory / "asyncapi.json"
    text = render_json(asyncapi())
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        written.append(str(path))
    return written


def contract_problems(directory: Path = CONTRACT_DIR) -> list[str]:
    problems = []
    for name, schema in event_schemas().items():
        path = directory / "events" / name
        if not path.exists():
            problems.append(f"{name} is not committed: run `ticketline contract --write`")
        elif path.read_text() != render_json(schema):
            problems.append(
                f"{name} differs from its model: a published schema version is frozen — bump "
                "the payload's schema_version (add an upcaster) and run `ticketline contract --write`"
            )
    path = directory / "asyncapi.json"
    if not path.exists() or path.read_text() != render_json(asyncapi()):
        problems.append("asyncapi.json is out of date: run `ticketline contract --write`")
    return problems

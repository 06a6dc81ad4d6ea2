"""The immutable event envelope and its hash chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

GENESIS_HASH = "0" * 64


class Actor(BaseModel):
    """Who did it: the authenticated subject and the role they acted in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=50)


SYSTEM_ACTOR = Actor(subject="system", role="system")


class EventPayload(BaseModel):
    """Base of every typed payload. Subclasses register themselves by event type.

    ``class TicketReceived(EventPayload, event_type="TicketReceived", stream_type="ticket")``
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]
    stream_type: ClassVar[str]
    # The field naming the data subject (a customer id) whose key seals the personal
    # fields of this event and of every later event of its stream (shared/kernel/personal.py).
    data_subject: ClassVar[str | None] = None

    def __init_subclass__(
        cls,
        *,
        event_type: str | None = None,
        schema_version: int = 1,
        stream_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if event_type is None:
            return  # an intermediate base class
        if stream_type is None:
            raise TypeError(f"{cls.__name__}: stream_type is required")
        cls.event_type = event_type
        cls.schema_version = schema_version
        cls.stream_type = stream_type
        from shared.kernel.events.registry import register_payload

        register_payload(cls)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A decided event before it is recorded; ``occurred_at`` defaults to the recording
    time (set it when the fact happened earlier, e.g. a return handed in yesterday)."""

    payload: EventPayload
    occurred_at: datetime | None = None


class DumpedPayload:
    """A payload already dumped to JSON types, beside its model: what an append asks of a
    payload without the model instance — the stored form the sealing hands the ledger, an
    import's spooled decisions (loading models back cost about as much as deciding again).
    Cast to ``EventPayload`` where one is expected; ``payload_model`` gives its model."""

    __slots__ = ("body", "model")

    def __init__(self, model: type[EventPayload], body: dict[str, Any]) -> None:
        self.model = model
        self.body = body

    @property
    def event_type(self) -> str:
        return self.model.event_type

    @property
    def schema_version(self) -> int:
        return self.model.schema_version

    @property
    def stream_type(self) -> str:
        return self.model.stream_type

    @property
    def data_subject(self) -> str | None:
        return self.model.data_subject

    def model_dump(self, *, mode: str = "json") -> dict[str, Any]:
        return self.body


def payload_model(payload: EventPayload) -> type[EventPayload]:
    """The model of a payload, also of a ``DumpedPayload``."""
    return payload.model if isinstance(payload, DumpedPayload) else type(payload)


class CommandContext(BaseModel):
    """Per-command metadata copied onto every event the command emits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: Actor
    service: str
    correlation_id: UUID = Field(default_factory=uuid4)
    causation_id: UUID | None = None


def _canonical_uuid(value: Any) -> str:
    return str(value if isinstance(value, UUID) else UUID(str(value)))


# A UUID kept as its canonical text: what the ledger stores and the hash covers, with no
# parsing on the read path (a replay reads millions of them).
UuidText = Annotated[
    str, BeforeValidator(_canonical_uuid), WithJsonSchema({"type": "string", "format": "uuid"})
]


class EventEnvelope(BaseModel):
    """A recorded event. ``hash`` covers every other field, including ``prev_hash``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UuidText
    position: int = Field(ge=1, description="Global position in the ledger (gap-free).")
    stream_type: str
    stream_id: str
    stream_version: int = Field(ge=1)
    event_type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    actor: Actor
    service: str
    correlation_id: UuidText
    causation_id: UuidText | None
    region: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> EventEnvelope:
        """An envelope from values already checked (the ledger's own rows, an append in
        progress): what ``model_construct`` does, without its per-field work — this sits
        on every event a replay reads. ``values`` must hold every field."""
        return _built(cls, values, _ENVELOPE_FIELDS)

    @classmethod
    def partial(cls, values: dict[str, Any], fields: frozenset[str]) -> EventEnvelope:
        """An envelope of some fields only (a ledger read of the fields its reader
        declared: ``EventStore.read_all``): ``values`` holds exactly ``fields``; reading
        any other field raises ``AttributeError``."""
        return _built(cls, values, fields)

    def computed_hash(self) -> str:
        return compute_hash(self.model_dump(mode="python", exclude={"hash"}))

    @property
    def ticket_id(self) -> str | None:
        return self.stream_id if self.stream_type == "ticket" else None

    def to_json_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.to_json_text())
        return document

    def to_json_text(self) -> str:
        """The envelope as canonical JSON (``canonical_json(to_json_dict())``, without the
        round trip through a dict)."""
        return canonical_json(self.model_dump(mode="python"))


_ENVELOPE_FIELDS = frozenset(EventEnvelope.model_fields)
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _built(
    cls: type[EventEnvelope], values: dict[str, Any], fields: frozenset[str]
) -> EventEnvelope:
    envelope = _new(cls)
    # BaseModel's slots set through their descriptors: half the cost of
    # object.__setattr__ by name.
    _set_dict(envelope, values)
    _set_fields_set(envelope, fields)
    _set_extra(envelope, None)
    _set_private(envelope, None)
    return envelope


def format_timestamp(value: datetime) -> str:
    """One fixed text form for hashing: UTC, microseconds, ``Z`` — what
    ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` writes, made by ``isoformat`` (a third of the
    cost, on every append and every verified event) where the two agree: years from 1000."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime writes such a year unpadded
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept; a non-finite float raises
    (``Infinity`` is not JSON: no reader of the ledger could parse the event back)."""
    return json.dumps(
        value,
        default=_default,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def compute_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()

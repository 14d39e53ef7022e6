"""The envelope every recorded event travels in once it leaves the aggregate:
on the bus, into projections, to auditors. Plain data, JSON-serialisable."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventEnvelope:
    position: int  # notification id in the event store: the log's total order
    event_id: str
    event_type: str  # e.g. "UserRegistered"
    context: str  # bounded context, e.g. "identity"
    aggregate_id: str
    aggregate_version: int
    timestamp: str  # ISO 8601, UTC
    schema_version: int
    actor: str
    command_id: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def trusted(cls, position: int, event_id: str, event_type: str, context: str, aggregate_id: str,
                aggregate_version: int, timestamp: str, schema_version: int, actor: str, command_id: str,
                data: dict[str, Any]) -> "EventEnvelope":
        """An envelope from fields known to be right (decoded from the log),
        made without the frozen dataclass's field-by-field `__init__`: half
        the cost, for the hundreds of thousands a rebuild decodes."""
        envelope = object.__new__(cls)
        envelope.__dict__.update(position=position, event_id=event_id, event_type=event_type, context=context,
                                 aggregate_id=aggregate_id, aggregate_version=aggregate_version,
                                 timestamp=timestamp, schema_version=schema_version, actor=actor,
                                 command_id=command_id, data=data)
        return envelope

    @property
    def subject(self) -> str:
        return f"attendwise.{self.context}.{self.event_type}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "EventEnvelope":
        return cls(**json.loads(raw))

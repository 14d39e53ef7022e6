"""What every AttendWise aggregate shares."""

from __future__ import annotations

from typing import ClassVar

from eventsourcing.domain import Aggregate


class AttendWiseAggregate(Aggregate):
    """Base aggregate. `CONTEXT` names the bounded context its events belong to;
    it becomes the second token of the event's subject on the bus
    (`attendwise.<context>.<EventName>`)."""

    CONTEXT: ClassVar[str] = "core"


def event_name(event_class: type) -> str:
    """The public name of a domain event: `User.Registered` -> `UserRegistered`."""
    return event_class.__qualname__.replace(".", "")

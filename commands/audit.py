"""Auditors' queries over the event log: check-in stories and a session's
attendance as of an instant (issue #9).

Both read the event store itself through the `EventLog` port, page by page,
never a read model: what they print is what the log holds, personal fields
decrypted (an erased person reads `[erased]`). Envelopes of other kinds are
dropped by event type as soon as a page arrives.

Cost: every query reads the whole log from position 0, O(events) time and
one page (`PAGE` envelopes) of memory plus the answer; a GraphQL page costs as
much as the whole answer, since a story's ticket issue precedes it and its
notifications follow it anywhere in the log. That suits occasional audits; a
dashboard must use the read models instead.

Who may ask: `auditor` and `platform_admin` (and the platform itself: the CLI,
run by an operator on the servers, asks as `system`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from domain.authorization import AUDITOR, PLATFORM_ADMIN, SYSTEM, Forbidden, check_signed_in
from domain.checkin_history import (ATTENDANCE_EVENTS, STORY_EVENTS, AttendanceAsOf, Story, StoryFilter,
                                    fold_attendance, fold_stories, parse_instant)
from domain.envelope import EventEnvelope
from domain.errors import InvalidInput

PAGE = 1000  # envelopes per read of the log
FORMATS = ("json", "csv", "table")


class EventLog(Protocol):
    """What the queries need of `adapters.eventstore.EventLog`."""

    def read(self, after: int, limit: int) -> list[EventEnvelope]: ...


def check_may_audit(user_id: uuid.UUID | None, roles: Iterable[str]) -> None:
    """`TOKEN_INVALID` when not signed in; `FORBIDDEN` unless an auditor, a platform admin or the platform."""
    roles = set(roles)
    check_signed_in(user_id, roles)
    if not {AUDITOR, PLATFORM_ADMIN, SYSTEM} & roles:
        raise Forbidden("only auditors may read the check-in history")


@dataclass(frozen=True)
class AuditCheckIns:
    """Query: the stories of the check-ins at a session and/or of a member,
    received between `start` and `end` (ISO 8601 instants with an offset)."""

    session_id: str | None = None
    user_id: str | None = None
    start: str | None = None
    end: str | None = None

    def filter(self) -> StoryFilter:
        if not self.session_id and not self.user_id:
            raise InvalidInput("name a session, a member or both", field="session")
        start = parse_instant(self.start, "from") if self.start else None
        end = parse_instant(self.end, "to") if self.end else None
        if start and end and start > end:
            raise InvalidInput("from is after to", field="from")
        return StoryFilter(_id(self.session_id, "session"), _id(self.user_id, "user"), start, end)


@dataclass(frozen=True)
class AuditAttendance:
    """Query: a session's attendance as it was at `as_of`."""

    session_id: str
    as_of: str


def _id(value: str | None, field: str) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError as e:
        raise InvalidInput(f"{field} is not an id", field=field) from e


def envelopes(log: EventLog, kinds: frozenset[str], page: int = PAGE) -> Iterator[EventEnvelope]:
    """The whole log in position order, only the envelopes of `kinds`."""
    after = 0
    while True:
        batch = log.read(after, page)
        if not batch:
            return
        after = batch[-1].position
        yield from (e for e in batch if e.event_type in kinds)


def audit_checkins(log: EventLog, query: AuditCheckIns, who: Any, after: int = 0) -> list[Story]:
    """The stories (past log position `after`), in log order. `who` has
    `user_id` and `roles` (a `CommandContext`)."""
    check_may_audit(who.user_id, who.roles)
    return fold_stories(envelopes(log, STORY_EVENTS), query.filter(), after)


def audit_attendance(log: EventLog, query: AuditAttendance, who: Any) -> AttendanceAsOf:
    check_may_audit(who.user_id, who.roles)
    session = _id(query.session_id, "session")
    if session is None:
        raise InvalidInput("name a session", field="session")
    return fold_attendance(envelopes(log, ATTENDANCE_EVENTS), session, parse_instant(query.as_of, "as_of"))

"""Attendance: places in a session (RSVP, capacity, waitlist), tickets with
one-time nonces, check-in attempts and their verdicts, and who is present.

- `Roster`: one per session; who holds a place and who waits, in order.
  Capacity is checked against it, so two last-place requests cannot both win.
- `Ticket`: one per member and session. Each issue carries a fresh nonce (the
  previous one is void); using a nonce is an event on the ticket, so the
  event store's version check lets exactly one use win.
- `CheckIn`: one per attempt, with every detail an auditor asks for (device,
  scan time on the device, time received, offline or not), then its verdict
  (`Succeeded`, `Failed` with a stable reason code, or pending until resolved).
- `Presence`: one per member and session: entered, exited, marked present or
  absent by a host, check-in annulled. It answers "is this person here?".
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput, Refused
from domain.social import pair_id

MAX_FAILED_ATTEMPTS = 5  # failed check-ins per member and session before the ticket is locked
POLICIES = ("face", "qr")  # face required, or QR only
DIRECTIONS = ("in", "out")


class CheckInRefused(Refused):
    """A check-in attempt refused before any verification; `code` says why."""


class NoPlace(DomainError):
    code = "NO_PLACE"
    status = 409


class TooManyAttempts(DomainError):
    code = "TOO_MANY_ATTEMPTS"
    status = 429


# ------------------------------------------------------------------ roster
class Roster(AttendWiseAggregate):
    """Places in one session: `confirmed` in the order taken, then `waiting`."""

    CONTEXT = "attendance"

    class Opened(Aggregate.Created):
        session_id: str

    @event(Opened)
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.confirmed: list[str] = []
        self.waiting: list[str] = []

    @staticmethod
    def create_id(session_id: str) -> uuid.UUID:
        return uuid.uuid5(uuid.UUID(session_id), "roster")

    class Change(Aggregate.Event):
        session_id: str
        user_id: str

    class PlaceTaken(Change):
        def apply(self, r: "Roster") -> None:
            r.confirmed.append(self.user_id)

    class Waitlisted(Change):
        def apply(self, r: "Roster") -> None:
            r.waiting.append(self.user_id)

    class PlaceGivenUp(Change):
        def apply(self, r: "Roster") -> None:
            for queue in (r.confirmed, r.waiting):
                if self.user_id in queue:
                    queue.remove(self.user_id)

    class Promoted(Change):
        """The first in line took a freed place (the notifier tells them)."""

        def apply(self, r: "Roster") -> None:
            r.waiting.remove(self.user_id)
            r.confirmed.append(self.user_id)

    def _emit(self, cls: type["Roster.Change"], user_id: str) -> None:
        self.trigger_event(cls, session_id=self.session_id, user_id=user_id)

    def standing(self, user_id: str) -> str | None:
        if user_id in self.confirmed:
            return "confirmed"
        if user_id in self.waiting:
            return "waitlisted"
        return None

    def reserve(self, user_id: str, capacity: int | None) -> str:
        """A place if one is free, else a place in line; asking twice changes nothing."""
        current = self.standing(user_id)
        if current:
            return current
        if capacity is None or len(self.confirmed) < capacity:
            self._emit(Roster.PlaceTaken, user_id)
            return "confirmed"
        self._emit(Roster.Waitlisted, user_id)
        return "waitlisted"

    def give_up(self, user_id: str, capacity: int | None) -> list[str]:
        """Free the place (or leave the line); returns who was promoted."""
        if not self.standing(user_id):
            return []
        self._emit(Roster.PlaceGivenUp, user_id)
        return self.fill(capacity)

    def fill(self, capacity: int | None) -> list[str]:
        """Promote from the line while places are free (after a cancellation,
        or when the capacity grows)."""
        promoted = []
        while self.waiting and (capacity is None or len(self.confirmed) < capacity):
            promoted.append(self.waiting[0])
            self._emit(Roster.Promoted, self.waiting[0])
        return promoted


# ------------------------------------------------------------------ ticket
def ticket_id(session_id: uuid.UUID | str, user_id: uuid.UUID | str) -> uuid.UUID:
    return pair_id("ticket", session_id, user_id)


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


class Ticket(AttendWiseAggregate):
    """A member's ticket for one session. Only the latest nonce is valid, and
    each nonce is used at most once."""

    CONTEXT = "attendance"

    class Issued(Aggregate.Created):
        session_id: str
        user_id: str
        nonce: str
        issued_at: dt.datetime

    @event(Issued)
    def __init__(self, session_id: str, user_id: str, nonce: str, issued_at: dt.datetime) -> None:
        self.session_id, self.user_id, self.nonce, self.issued_at = session_id, user_id, nonce, issued_at
        self.used: dict[str, str] = {}  # nonce -> the check-in that used it
        self.failed_attempts = 0

    @staticmethod
    def create_id(session_id: str, user_id: str, **_: Any) -> uuid.UUID:
        return ticket_id(session_id, user_id)

    class Reissued(Aggregate.Event):
        nonce: str
        issued_at: dt.datetime

    def reissue(self, now: dt.datetime) -> None:
        """A fresh nonce; the previous one can no longer be used."""
        self.check_attempts_left()
        self._reissued(new_nonce(), now)

    @event(Reissued)
    def _reissued(self, nonce: str, issued_at: dt.datetime) -> None:
        self.nonce, self.issued_at = nonce, issued_at

    def check_attempts_left(self) -> None:
        if self.failed_attempts >= MAX_FAILED_ATTEMPTS:
            raise TooManyAttempts(f"{MAX_FAILED_ATTEMPTS} failed check-ins for this session: a host can mark you present")

    class NonceUsed(Aggregate.Event):
        """The one use of a nonce, by the check-in `checkin_id`."""

        nonce: str
        checkin_id: str

    def use(self, nonce: str, checkin_id: uuid.UUID) -> None:
        if nonce in self.used:
            raise CheckInRefused("TICKET_ALREADY_USED", "this ticket was already used; show a fresh one")
        if nonce != self.nonce:
            raise CheckInRefused("TICKET_REPLACED", "a newer ticket replaced this one; show the newest", status=409)
        self.check_attempts_left()
        self._nonce_used(nonce, str(checkin_id))

    @event(NonceUsed)
    def _nonce_used(self, nonce: str, checkin_id: str) -> None:
        self.used[nonce] = checkin_id

    class AttemptFailed(Aggregate.Event):
        checkin_id: str
        reason: str

    def count_failure(self, checkin_id: uuid.UUID, reason: str) -> None:
        self._attempt_failed(str(checkin_id), reason)

    @event(AttemptFailed)
    def _attempt_failed(self, checkin_id: str, reason: str) -> None:
        self.failed_attempts += 1


# ------------------------------------------------------------------ check-in
class CheckIn(AttendWiseAggregate):
    """One attempt to check in (or out) at a session, and its verdict."""

    CONTEXT = "checkin"

    class Attempted(Aggregate.Created):
        session_id: str
        user_id: str
        ticket_id: str
        device_id: str
        gate: str
        direction: str
        policy: str
        scanned_at: dt.datetime  # on the device's clock
        received_at: dt.datetime  # on the server's clock
        offline: bool

    @event(Attempted)
    def __init__(self, session_id: str, user_id: str, ticket_id: str, device_id: str, gate: str, direction: str,
                 policy: str, scanned_at: dt.datetime, received_at: dt.datetime, offline: bool) -> None:
        self.session_id, self.user_id, self.ticket_id = session_id, user_id, ticket_id
        self.device_id, self.gate, self.direction, self.policy = device_id, gate, direction, policy
        self.scanned_at, self.received_at, self.offline = scanned_at, received_at, offline
        self.outcome = "pending"
        self.reason: str | None = None

    class Verdict(Aggregate.Event):
        OUTCOME = ""
        reason: str  # a stable code, "OK" when it succeeded
        confidence: float | None
        distance: float | None
        threshold: float | None
        model: str | None
        model_version: str | None

        def apply(self, c: "CheckIn") -> None:
            c.outcome, c.reason = self.OUTCOME, self.reason

    class Succeeded(Verdict):
        OUTCOME = "succeeded"

    class Failed(Verdict):
        OUTCOME = "failed"

    def decide(self, succeeded: bool, reason: str, face: Any = None) -> None:
        """Record the verdict (once: a decided attempt stays decided)."""
        if self.outcome == "pending":
            self._verdict(succeeded, reason, face)

    def _verdict(self, succeeded: bool, reason: str, face: Any) -> None:
        self.trigger_event(CheckIn.Succeeded if succeeded else CheckIn.Failed, reason=reason,
                           confidence=getattr(face, "confidence", None), distance=getattr(face, "distance", None),
                           threshold=getattr(face, "threshold", None), model=getattr(face, "model", None),
                           model_version=getattr(face, "model_version", None))

    class Conflicted(Aggregate.Event):
        """Two offline kiosks accepted one ticket: a host decides."""

        other_checkin_id: str

        def apply(self, c: "CheckIn") -> None:
            c.outcome = "conflict"

    def conflict(self, other: uuid.UUID) -> None:
        self.trigger_event(CheckIn.Conflicted, other_checkin_id=str(other))

    def resolve(self, accept: bool) -> None:
        """A host settles a conflict between two offline scans."""
        if self.outcome != "conflict":
            raise CheckInRefused("NOT_IN_CONFLICT", "only a conflicting check-in is resolved")
        self._verdict(accept, "ACCEPTED_BY_HOST" if accept else "REJECTED_BY_HOST", None)

    class Annulled(Aggregate.Event):
        """A mistaken check-in, undone by a compensating event (never deleted)."""

        by: str
        reason: str

        def apply(self, c: "CheckIn") -> None:
            c.outcome = "annulled"

    def annul(self, by: str, reason: str) -> None:
        if self.outcome in ("succeeded", "conflict"):
            self.trigger_event(CheckIn.Annulled, by=by, reason=reason)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"policy must be one of {', '.join(POLICIES)}", field="policy")
    return policy


def check_window(now: dt.datetime, opens: dt.datetime, closes: dt.datetime) -> None:
    if now < opens:
        raise CheckInRefused("NOT_YET_OPEN", f"check-in opens at {opens.isoformat()}", status=409,
                             opens_at=opens.isoformat())
    if now > closes:
        raise CheckInRefused("TICKET_EXPIRED", "check-in has closed", status=410)


# ------------------------------------------------------------------ presence
def presence_id(session_id: uuid.UUID | str, user_id: uuid.UUID | str) -> uuid.UUID:
    return pair_id("presence", session_id, user_id)


class Presence(AttendWiseAggregate):
    """Whether a member is at a session: `inside` (and at which gate), and
    whether they attended at all. Hosts may mark present or absent, with a
    reason; every change names who made it."""

    CONTEXT = "checkin"

    class Began(Aggregate.Created):
        session_id: str
        user_id: str

    @event(Began)
    def __init__(self, session_id: str, user_id: str) -> None:
        self.session_id, self.user_id = session_id, user_id
        self.attended = False
        self.inside_at: str | None = None  # the gate they are inside through

    @staticmethod
    def create_id(session_id: str, user_id: str) -> uuid.UUID:
        return presence_id(session_id, user_id)

    class Change(Aggregate.Event):
        session_id: str
        user_id: str

    class Entered(Change):
        checkin_id: str
        gate: str

        def apply(self, p: "Presence") -> None:
            p.attended, p.inside_at = True, self.gate

    class Exited(Change):
        checkin_id: str
        gate: str

        def apply(self, p: "Presence") -> None:
            p.inside_at = None

    class MarkedPresent(Change):
        by: str
        reason: str

        def apply(self, p: "Presence") -> None:
            p.attended = True

    class MarkedAbsent(Change):
        by: str
        reason: str

        def apply(self, p: "Presence") -> None:
            p.attended, p.inside_at = False, None

    def _emit(self, cls: type["Presence.Change"], **kw: str) -> None:
        self.trigger_event(cls, session_id=self.session_id, user_id=self.user_id, **kw)

    def scan(self, checkin_id: uuid.UUID, direction: str, gate: str) -> None:
        if direction == "in":
            self._emit(Presence.Entered, checkin_id=str(checkin_id), gate=gate)
        else:
            self._emit(Presence.Exited, checkin_id=str(checkin_id), gate=self.inside_at or gate)

    def mark(self, present: bool, by: str, reason: str) -> None:
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("say why (the audit trail keeps it)", field="reason")
        self._emit(Presence.MarkedPresent if present else Presence.MarkedAbsent, by=by, reason=reason[:500])

"""Check-in history for auditors: pure folds of the event log.

Two questions, answered from envelopes (the log read in position order), never
from read models:

- `StoryBook`: the full story of each check-in attempt: the attempt itself
  (device, gate, direction, policy, the device's scan time and the server's
  receive time, offline or not), its verdict (reason code; for faces the
  confidence, distance, threshold, model and model version), a conflict and its
  resolution, an annulment (by whom, why), the ticket's part (the issue in
  force when the attempt arrived, the nonce it used, a failure it counted),
  the member's presence changes it caused, hosts' overrides (marked present or
  absent, by whom, why) and the notifications its verdict caused with every
  delivery outcome. Every entry carries the event's log position, timestamp
  and actor.
- `AttendanceFold`: a session's attendance as it was at an instant: per
  member their place, attended or not, inside or not, and their last verdict;
  plus counts.

Where a host's override lands: with the annulment it belongs to (same
command), else in the story of the member's latest successful attempt at that
session before it, else their latest attempt, else in an `override` story of
its own (a member marked present who never scanned).

Nonces are shown as `nonce_ref`, a short SHA-256 fingerprint: enough to see
which issue a check-in used, useless for forging a ticket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from domain.attendance import ticket_id
from domain.envelope import EventEnvelope
from domain.errors import InvalidInput

CHECKIN_EVENTS = frozenset({"CheckInAttempted", "CheckInSucceeded", "CheckInFailed", "CheckInConflicted",
                            "CheckInAnnulled"})
VERDICTS = {"CheckInSucceeded": "succeeded", "CheckInFailed": "failed"}
TICKET_ISSUES = frozenset({"TicketIssued", "TicketReissued"})
TICKET_EVENTS = TICKET_ISSUES | {"TicketNonceUsed", "TicketAttemptFailed"}
PRESENCE_SCANS = frozenset({"PresenceEntered", "PresenceExited"})
PRESENCE_MARKS = frozenset({"PresenceMarkedPresent", "PresenceMarkedAbsent"})
NOTIFICATION_EVENTS = frozenset({"NotificationQueued", "NotificationSent", "NotificationAttemptFailed",
                                 "NotificationGaveUp", "NotificationSkipped", "NotificationRequeued"})
USER_EVENTS = frozenset({"UserRegistered", "UserDisplayNameChanged"})
ROSTER_EVENTS = frozenset({"RosterPlaceTaken", "RosterWaitlisted", "RosterPlaceGivenUp", "RosterPromoted"})
SESSION_EVENTS = frozenset({"SessionScheduled", "SessionChanged", "SessionCancelled"})

STORY_EVENTS = CHECKIN_EVENTS | TICKET_EVENTS | PRESENCE_SCANS | PRESENCE_MARKS | NOTIFICATION_EVENTS | USER_EVENTS
ATTENDANCE_EVENTS = (CHECKIN_EVENTS | PRESENCE_SCANS | PRESENCE_MARKS | ROSTER_EVENTS | SESSION_EVENTS
                     | USER_EVENTS)

# the fields of each event an auditor sees (in this order); personal message context is never shown
DETAILS: dict[str, tuple[str, ...]] = {
    "CheckInAttempted": ("session_id", "user_id", "ticket_id", "device_id", "gate", "direction", "policy",
                         "scanned_at", "received_at", "offline"),
    "CheckInSucceeded": ("reason", "confidence", "distance", "threshold", "model", "model_version"),
    "CheckInFailed": ("reason", "confidence", "distance", "threshold", "model", "model_version"),
    "CheckInConflicted": ("other_checkin_id",),
    "CheckInAnnulled": ("by", "reason"),
    "TicketIssued": ("ticket_id", "issued_at", "nonce_ref"),
    "TicketReissued": ("ticket_id", "issued_at", "nonce_ref"),
    "TicketNonceUsed": ("ticket_id", "nonce_ref", "checkin_id"),
    "TicketAttemptFailed": ("ticket_id", "checkin_id", "reason"),
    "PresenceEntered": ("checkin_id", "gate"),
    "PresenceExited": ("checkin_id", "gate"),
    "PresenceMarkedPresent": ("by", "reason"),
    "PresenceMarkedAbsent": ("by", "reason"),
    "NotificationQueued": ("notification_id", "kind", "channel", "recipient_id", "send_after"),
    "NotificationSent": ("notification_id", "attempt", "provider", "provider_id"),
    "NotificationAttemptFailed": ("notification_id", "attempt", "error", "retry_at"),
    "NotificationGaveUp": ("notification_id", "attempts", "error"),
    "NotificationSkipped": ("notification_id", "reason"),
    "NotificationRequeued": ("notification_id", "by", "at"),
}

STORY_KEYS = ("checkin_id", "kind", "position", "session_id", "user_id", "user_name", "ticket_id", "device_id",
              "gate", "direction", "policy", "scanned_at", "received_at", "offline", "outcome", "reason",
              "confidence", "distance", "threshold", "model", "model_version", "entries")
ENTRY_KEYS = ("position", "at", "actor", "actor_name", "event", "event_id", "summary", "details")
CSV_COLUMNS = ("checkin_id", "kind", "session_id", "user_id", "user_name", "outcome", "reason", "position", "at",
               "actor", "actor_name", "event", "event_id", "summary", "details")


# ------------------------------------------------------------------ instants
def parse_instant(value: str, field: str) -> dt.datetime:
    """An ISO 8601 instant with an offset (`Z` or `+01:00`), as UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError) as e:
        raise InvalidInput(f"{field} is not an ISO 8601 instant", field=field) from e
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field} needs an offset (e.g. Z or +01:00)", field=field)
    return parsed.astimezone(dt.timezone.utc)


def _instant(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def nonce_ref(nonce: Any) -> str | None:
    return hashlib.sha256(str(nonce).encode()).hexdigest()[:12] if nonce else None


# ------------------------------------------------------------------ stories
@dataclass(frozen=True)
class Entry:
    """One event in a story."""

    position: int
    at: str  # the event's timestamp (ISO 8601, UTC, the server's real clock)
    actor: str  # who did it: user:<id>, or a platform job's name
    event: str  # the event type, e.g. CheckInAnnulled
    event_id: str
    summary: str  # one line for people
    details: dict[str, Any]  # the event's fields an auditor sees (DETAILS)
    actor_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ENTRY_KEYS}


@dataclass
class Story:
    """A check-in attempt and everything that followed from it (`kind`
    `checkin`), or a host's markings of a member who had not scanned
    (`kind` `override`, `checkin_id` None)."""

    kind: str
    position: int  # the attempt's log position (an override story: its first marking's)
    session_id: str
    user_id: str
    checkin_id: str | None = None
    ticket_id: str | None = None
    device_id: str | None = None
    gate: str | None = None
    direction: str | None = None
    policy: str | None = None
    scanned_at: str | None = None
    received_at: str | None = None
    offline: bool | None = None
    outcome: str = "pending"  # pending, succeeded, failed, conflict, annulled; an override story: marked
    reason: str | None = None
    confidence: float | None = None
    distance: float | None = None
    threshold: float | None = None
    model: str | None = None
    model_version: str | None = None
    user_name: str | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def at(self) -> dt.datetime | None:
        """What `from`/`to` filter on: the server's receive time (an override story: its first marking's time)."""
        return _instant(self.received_at if self.kind == "checkin" else self.entries[0].at if self.entries else None)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in STORY_KEYS}
        out["entries"] = [e.as_dict() for e in sorted(self.entries, key=lambda e: e.position)]
        return out


SUMMARIES = {  # an entry's line for each kind of event; a field the event lacks reads None
    "CheckInConflicted": "conflicts with check-in {other_checkin_id}: a host decides",
    "CheckInAnnulled": "annulled by {by}: {reason}",
    "TicketIssued": "ticket issued (nonce {nonce_ref})",
    "TicketReissued": "ticket reissued (nonce {nonce_ref})",
    "TicketNonceUsed": "nonce {nonce_ref} used",
    "TicketAttemptFailed": "failure counted on the ticket: {reason}",
    "PresenceEntered": "entered at gate {gate}",
    "PresenceExited": "left by gate {gate}",
    "PresenceMarkedPresent": "marked present by {by}: {reason}",
    "PresenceMarkedAbsent": "marked absent by {by}: {reason}",
    "NotificationQueued": "notification {kind} queued on {channel}",
    "NotificationSent": "notification sent via {provider} (attempt {attempt})",
    "NotificationAttemptFailed": "notification attempt {attempt} failed: {error}; retry at {retry_at}",
    "NotificationGaveUp": "notification gave up after {attempts} attempt(s): {error}",
    "NotificationSkipped": "notification skipped: {reason}",
    "NotificationRequeued": "notification requeued by {by}",
}


class _Fields(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> None:
        return None


def _summary(env: EventEnvelope, d: dict[str, Any]) -> str:
    t = env.event_type
    if t == "CheckInAttempted":
        mode = "offline " if d.get("offline") else ""
        return (f"{mode}scan {d.get('direction')} at gate {d.get('gate')} on device {d.get('device_id')} "
                f"(policy {d.get('policy') or '-'})")
    if t in VERDICTS:
        face = ""
        if d.get("model") or d.get("distance") is not None:
            face = (f"; face confidence {d.get('confidence')}, distance {d.get('distance')}, threshold "
                    f"{d.get('threshold')}, model {d.get('model')} {d.get('model_version')}")
        return f"{VERDICTS[t]}: {d.get('reason')}{face}"
    return SUMMARIES[t].format_map(_Fields(d)) if t in SUMMARIES else t


def entry_of(env: EventEnvelope) -> Entry:
    d = dict(env.data)
    if env.event_type in TICKET_EVENTS:
        d["ticket_id"] = env.aggregate_id
        d["nonce_ref"] = nonce_ref(d.get("nonce"))
    if env.event_type in NOTIFICATION_EVENTS:
        d["notification_id"] = env.aggregate_id
    details = {k: d.get(k) for k in DETAILS.get(env.event_type, ())}
    return Entry(env.position, env.timestamp, env.actor, env.event_type, env.event_id, _summary(env, d), details)


@dataclass(frozen=True)
class StoryFilter:
    """Which stories: a session's and/or a member's, attempts received in [start, end]."""

    session_id: str | None = None
    user_id: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def pair(self, session_id: str, user_id: str) -> bool:
        return ((self.session_id is None or session_id == self.session_id)
                and (self.user_id is None or user_id == self.user_id))

    def when(self, at: dt.datetime | None) -> bool:
        if self.start is None and self.end is None:
            return True
        if at is None:
            return False
        return (self.start is None or at >= self.start) and (self.end is None or at <= self.end)


class StoryBook:
    """Folds envelopes (in log order) into stories, keeping only what the
    filter asks for as it goes, so memory grows with the answer, not the log."""

    def __init__(self, want: StoryFilter) -> None:
        self.want = want
        self.stories: dict[str, Story] = {}  # checkin id -> story
        self.overrides: dict[tuple[str, str], Story] = {}  # (session, user) -> override story
        self.by_member: dict[tuple[str, str], list[Story]] = {}  # attempts in log order
        self.tickets: dict[str, Entry | None] = {}  # kept ticket id -> its issue in force
        self.early: dict[str, list[Entry]] = {}  # checkin id -> its ticket's events saved before the attempt
        self.verdicts: dict[str, Story] = {}  # verdict event id -> story
        self.annulments: dict[str, Story] = {}  # command id -> the story it annulled
        self.notifications: dict[str, Story] = {}  # notification id -> story
        self.names: dict[str, str] = {}  # user id -> display name (latest; "[erased]" when erased)

    def add(self, env: EventEnvelope) -> None:
        t, d = env.event_type, env.data
        if t in USER_EVENTS:
            self.names[env.aggregate_id] = d.get("display_name") or ""
        elif t == "CheckInAttempted":
            self._attempted(env)
        elif t in CHECKIN_EVENTS:
            story = self.stories.get(env.aggregate_id)
            if story is not None:
                self._decided(story, env)
        elif t in TICKET_ISSUES:
            if t == "TicketIssued" and self.want.pair(d.get("session_id", ""), d.get("user_id", "")):
                self.tickets[env.aggregate_id] = None
            if env.aggregate_id in self.tickets:
                self.tickets[env.aggregate_id] = entry_of(env)
        elif t in TICKET_EVENTS:  # saved with the attempt, before it: kept until the attempt arrives
            story = self.stories.get(d.get("checkin_id", ""))
            if story is not None:
                story.entries.append(entry_of(env))
            elif env.aggregate_id in self.tickets:
                self.early.setdefault(d.get("checkin_id", ""), []).append(entry_of(env))
        elif t in PRESENCE_SCANS:
            story = self.stories.get(d.get("checkin_id", ""))
            if story is not None:
                story.entries.append(entry_of(env))
        elif t in PRESENCE_MARKS:
            if self.want.pair(d.get("session_id", ""), d.get("user_id", "")):
                self._marked(env)
        elif t == "NotificationQueued":
            story = self.verdicts.get(d.get("source", ""))
            if story is not None:
                self.notifications[env.aggregate_id] = story
                story.entries.append(entry_of(env))
        elif t in NOTIFICATION_EVENTS:
            story = self.notifications.get(env.aggregate_id)
            if story is not None:
                story.entries.append(entry_of(env))

    def _attempted(self, env: EventEnvelope) -> None:
        d = env.data
        sid, uid = d.get("session_id") or "", d.get("user_id") or ""
        early = self.early.pop(env.aggregate_id, [])
        if not self.want.pair(sid, uid) or not self.want.when(_instant(d.get("received_at"))):
            return
        tid = d.get("ticket_id") or (str(ticket_id(sid, uid)) if sid and uid else "")
        story = Story("checkin", env.position, sid, uid, checkin_id=env.aggregate_id, ticket_id=d.get("ticket_id"),
                      device_id=d.get("device_id"), gate=d.get("gate"), direction=d.get("direction"),
                      policy=d.get("policy"), scanned_at=d.get("scanned_at"), received_at=d.get("received_at"),
                      offline=d.get("offline"))
        issue = self.tickets.get(tid)
        if issue is not None:  # the ticket's issue in force when the attempt arrived
            story.entries.append(issue)
        story.entries.append(entry_of(env))
        story.entries += early
        self.stories[env.aggregate_id] = story
        self.by_member.setdefault((sid, uid), []).append(story)

    def _decided(self, story: Story, env: EventEnvelope) -> None:
        t, d = env.event_type, env.data
        story.entries.append(entry_of(env))
        if t in VERDICTS:
            story.outcome, story.reason = VERDICTS[t], d.get("reason")
            for k in ("confidence", "distance", "threshold", "model", "model_version"):
                setattr(story, k, d.get(k))
            self.verdicts[env.event_id] = story
        elif t == "CheckInConflicted":
            story.outcome, story.reason = "conflict", "DUPLICATE_OFFLINE_SCAN"
        elif t == "CheckInAnnulled":
            story.outcome, story.reason = "annulled", d.get("reason")
            self.annulments[env.command_id] = story

    def _marked(self, env: EventEnvelope) -> None:
        d = env.data
        key = (d.get("session_id", ""), d.get("user_id", ""))
        story = self.annulments.get(env.command_id) if env.command_id else None
        if story is None:
            attempts = self.by_member.get(key, [])
            succeeded = [s for s in attempts if s.outcome == "succeeded"]
            story = (succeeded or attempts or [None])[-1]
        if story is None:
            story = self.overrides.get(key)
            if story is None:
                story = self.overrides[key] = Story("override", env.position, key[0], key[1], outcome="marked")
            story.outcome = "marked present" if env.event_type == "PresenceMarkedPresent" else "marked absent"
            story.reason = d.get("reason")
        story.entries.append(entry_of(env))

    def result(self, after: int = 0) -> list[Story]:
        """The stories past log position `after`, in log order, names filled in."""
        out = [s for s in (*self.stories.values(), *self.overrides.values())
               if s.position > after and (s.kind == "checkin" or self.want.when(s.at))]
        for s in out:
            s.user_name = self.names.get(s.user_id)
            s.entries = [self._named(e) for e in sorted(s.entries, key=lambda e: e.position)]
        return sorted(out, key=lambda s: s.position)

    def _named(self, e: Entry) -> Entry:
        if e.actor.startswith("user:") and e.actor[5:] in self.names:
            return Entry(e.position, e.at, e.actor, e.event, e.event_id, e.summary, e.details, self.names[e.actor[5:]])
        return e


def fold_stories(envelopes: Iterable[EventEnvelope], want: StoryFilter, after: int = 0) -> list[Story]:
    book = StoryBook(want)
    for env in envelopes:
        book.add(env)
    return book.result(after)


def story_rows(stories: Iterable[Story]) -> Iterator[dict[str, Any]]:
    """One flat row per story entry (CSV_COLUMNS); details as compact JSON."""
    for s in stories:
        for e in s.entries:
            yield {"checkin_id": s.checkin_id or "", "kind": s.kind, "session_id": s.session_id,
                   "user_id": s.user_id, "user_name": s.user_name or "", "outcome": s.outcome,
                   "reason": s.reason or "", "position": e.position, "at": e.at, "actor": e.actor,
                   "actor_name": e.actor_name or "", "event": e.event, "event_id": e.event_id, "summary": e.summary,
                   "details": json.dumps(e.details, sort_keys=True, separators=(",", ":"))}


# ------------------------------------------------------------------ attendance as of an instant
def committed_by(envelopes: Iterable[EventEnvelope], as_of: dt.datetime) -> Iterator[EventEnvelope]:
    """The envelopes of the saves complete at `as_of`. Events of one save are
    adjacent in the log and share a command id; a save counts from its last
    event's timestamp, so a state as of an instant never shows half a command
    (an attempt without the verdict saved with it)."""
    run: list[EventEnvelope] = []
    latest: dt.datetime | None = None

    def flush() -> Iterator[EventEnvelope]:
        if run and latest is not None and latest <= as_of:
            yield from run

    for env in envelopes:
        if run and (not env.command_id or env.command_id != run[-1].command_id):
            yield from flush()
            run, latest = [], None
        run.append(env)
        at = _instant(env.timestamp)
        latest = at if latest is None or (at is not None and at > latest) else latest
    yield from flush()


@dataclass
class MemberAsOf:
    user_id: str
    user_name: str | None = None
    standing: str | None = None  # confirmed, waitlisted, gave_up; None: never had a place
    attended: bool = False
    inside: bool = False
    gate: str | None = None  # the gate they are inside through
    last_verdict: str | None = None  # succeeded, failed, conflict, annulled, pending
    last_reason: str | None = None
    last_verdict_at: str | None = None
    last_checkin_id: str | None = None
    marked_by: str | None = None
    mark_reason: str | None = None

    KEYS = ("user_id", "user_name", "standing", "attended", "inside", "gate", "last_verdict", "last_reason",
            "last_verdict_at", "last_checkin_id", "marked_by", "mark_reason")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}


COUNT_KEYS = ("members", "confirmed", "waitlisted", "attended", "inside", "attempts", "succeeded", "failed",
              "conflicts", "annulled", "pending")


@dataclass
class AttendanceAsOf:
    session_id: str
    as_of: str
    position: int  # the log position of the session's last event included (0: none yet)
    title: str | None
    start: str | None
    cancelled: bool
    members: list[MemberAsOf]
    counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "as_of": self.as_of, "position": self.position, "title": self.title,
                "start": self.start, "cancelled": self.cancelled, "counts": dict(self.counts),
                "members": [m.as_dict() for m in self.members]}


class AttendanceFold:
    """A session's attendance from its events, applied in log order."""

    def __init__(self, session_id: str, as_of: dt.datetime) -> None:
        self.session_id, self.as_of = session_id, as_of
        self.members: dict[str, MemberAsOf] = {}
        self.attempts: dict[str, tuple[str, str]] = {}  # checkin id -> (member, outcome)
        self.names: dict[str, str] = {}
        self.title: str | None = None
        self.start: str | None = None
        self.cancelled = False
        self.position = 0

    def _member(self, user_id: str) -> MemberAsOf:
        return self.members.setdefault(user_id, MemberAsOf(user_id))

    def add(self, env: EventEnvelope) -> None:
        t, d, sid = env.event_type, env.data, self.session_id
        if t in USER_EVENTS:
            self.names[env.aggregate_id] = d.get("display_name") or ""
            return
        if t in SESSION_EVENTS:
            if env.aggregate_id != sid:
                return
            if t == "SessionScheduled":
                self.title, self.start = d.get("title"), d.get("start")
            elif t == "SessionChanged":
                self.start = d.get("start")
            else:
                self.cancelled = True
        elif t in ROSTER_EVENTS:
            if d.get("session_id") != sid:
                return
            m = self._member(d["user_id"])
            m.standing = {"RosterPlaceTaken": "confirmed", "RosterWaitlisted": "waitlisted",
                          "RosterPromoted": "confirmed", "RosterPlaceGivenUp": "gave_up"}[t]
        elif t == "CheckInAttempted":
            if d.get("session_id") != sid or not d.get("user_id"):
                return
            self.attempts[env.aggregate_id] = (d["user_id"], "pending")
            m = self._member(d["user_id"])
            m.last_verdict, m.last_reason, m.last_checkin_id = "pending", None, env.aggregate_id
            m.last_verdict_at = env.timestamp
        elif t in CHECKIN_EVENTS:
            if env.aggregate_id not in self.attempts:
                return
            user_id, _ = self.attempts[env.aggregate_id]
            outcome = VERDICTS.get(t) or ("conflict" if t == "CheckInConflicted" else "annulled")
            self.attempts[env.aggregate_id] = (user_id, outcome)
            m = self._member(user_id)
            m.last_verdict, m.last_verdict_at, m.last_checkin_id = outcome, env.timestamp, env.aggregate_id
            m.last_reason = d.get("reason") if t != "CheckInConflicted" else "DUPLICATE_OFFLINE_SCAN"
        elif t in PRESENCE_SCANS | PRESENCE_MARKS:
            if d.get("session_id") != sid:
                return
            m = self._member(d["user_id"])
            if t == "PresenceEntered":
                m.attended, m.inside, m.gate = True, True, d.get("gate")
            elif t == "PresenceExited":
                m.inside, m.gate = False, None
            else:
                m.marked_by, m.mark_reason = d.get("by"), d.get("reason")
                if t == "PresenceMarkedPresent":
                    m.attended = True
                else:
                    m.attended, m.inside, m.gate = False, False, None
        else:
            return
        self.position = env.position

    def result(self) -> AttendanceAsOf:
        members = sorted(self.members.values(), key=lambda m: (self.names.get(m.user_id) or "", m.user_id))
        for m in members:
            m.user_name = self.names.get(m.user_id)
        outcomes = [o for _, o in self.attempts.values()]
        counts = {"members": len(members),
                  "confirmed": sum(m.standing == "confirmed" for m in members),
                  "waitlisted": sum(m.standing == "waitlisted" for m in members),
                  "attended": sum(m.attended for m in members), "inside": sum(m.inside for m in members),
                  "attempts": len(outcomes), "succeeded": outcomes.count("succeeded"),
                  "failed": outcomes.count("failed"), "conflicts": outcomes.count("conflict"),
                  "annulled": outcomes.count("annulled"), "pending": outcomes.count("pending")}
        return AttendanceAsOf(self.session_id, self.as_of.isoformat(), self.position, self.title, self.start,
                              self.cancelled, members, counts)


def fold_attendance(envelopes: Iterable[EventEnvelope], session_id: str, as_of: dt.datetime) -> AttendanceAsOf:
    fold = AttendanceFold(session_id, as_of)
    for env in committed_by(envelopes, as_of):
        fold.add(env)
    return fold.result()

"""Notifications: what a person is told, on which channel, and when.

A `Notification` is one message to one person on one channel. Its id is
derived from what caused it (the source event's id, or the reminder it is),
its kind, its channel and its recipient, so an event delivered twice can only
ever queue it once. Every delivery attempt is an event: queued, attempt
started (a lease: whoever records it may send), sent, attempt failed (with the
time of the next try), gave up (a dead letter), requeued (an operator's retry),
skipped (the person's quiet hours outlasted the message's use).

`NotificationPreferences` are a person's choices: channels per kind, quiet
hours, which reminders, locale, and the push and SMS addresses.

The rules (`wants`, `send_after`, `retry_delay`, `due_reminder`) are plain
functions of their inputs.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
import zoneinfo
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import InvalidInput, Refused

NAMESPACE = uuid.UUID("0f6a3b52-2d1e-4c6b-9d57-4a8f3e1c2b90")
CHANNELS = ("email", "push", "sms")
# kind -> (on by default per channel, transactional: sent whatever the preferences and quiet hours say)
KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "email_verification": (("email",), True),
    "password_reset": (("email",), True),
    "checkin_succeeded": (("email", "push"), True),  # the person is at the door: no quiet hours
    "checkin_failed": (("email", "push"), True),
    "session_reminder": (("email", "push"), False),
    "session_changed": (("email", "push", "sms"), False),
    "session_cancelled": (("email", "push", "sms"), False),
    "join_approved": (("email", "push"), False),
    "reply_to_post": (("email", "push"), False),
    "waitlist_promoted": (("email", "push", "sms"), False),
}
EMAIL_ONLY = ("email_verification", "password_reset")  # links to the account itself: only to its address
REMINDER_OFFSETS = (1440, 60)  # minutes before a session starts: the reminders there are
MAX_ATTEMPTS = 5
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164


class NotificationRefused(Refused):
    pass


def notification_id(source: str, kind: str, channel: str, recipient: str) -> uuid.UUID:
    """Deterministic: the same cause, kind, channel and person give the same id."""
    return uuid.uuid5(NAMESPACE, f"{source}|{kind}|{channel}|{recipient}")


def reminder_source(session_id: str, start: str, minutes_before: int) -> str:
    """A reminder is caused by a session's start (not an event): a moved session
    is reminded of again at its new time, the same time never twice."""
    return f"reminder:{session_id}:{start}:{minutes_before}"


def preferences_id(user_id: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"preferences:{user_id}")


# ------------------------------------------------------------------ rules
def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"unknown notification kind {kind!r}; known: {', '.join(KINDS)}", field="kind")
    return kind


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    return channel


def check_hhmm(value: str | None, field: str) -> str | None:
    if value is not None and not _HHMM.match(value):
        raise InvalidInput("a time of day is HH:MM (24 hours)", field=field)
    return value


def check_offsets(offsets: list[int]) -> list[int]:
    unknown = set(offsets) - set(REMINDER_OFFSETS)
    if unknown:
        raise InvalidInput(f"reminders are {', '.join(map(str, REMINDER_OFFSETS))} minutes before", field="reminders")
    return sorted(set(offsets), reverse=True)


def check_address(channel: str, address: str | None) -> str | None:
    if address is None or address == "":
        return None
    if channel == "sms" and not _PHONE.match(address):
        raise InvalidInput("a phone number is in E.164 form, e.g. +4915112345678", field="phone")
    if channel == "push" and not 8 <= len(address) <= 4096:
        raise InvalidInput("a push token has 8 to 4096 characters", field="push_token")
    return address


def is_transactional(kind: str) -> bool:
    return KINDS[kind][1]


def in_quiet_hours(local: dt.time, start: str, end: str) -> bool:
    s, e = dt.time.fromisoformat(start), dt.time.fromisoformat(end)
    if s == e:
        return False
    return s <= local < e if s < e else (local >= s or local < e)  # a window over midnight


def send_after(now: dt.datetime, kind: str, quiet: tuple[str, str] | None, time_zone: str,
               expires: dt.datetime | None = None) -> dt.datetime | None:
    """When a message may go: now, or the end of the person's quiet hours (in
    their zone; transactional kinds ignore them). None: the quiet hours last
    beyond `expires` (a reminder for a session that will have started), so it
    is not sent at all."""
    if quiet is None or is_transactional(kind):
        return now
    zone = zoneinfo.ZoneInfo(time_zone)
    local = now.astimezone(zone)
    if not in_quiet_hours(local.time(), *quiet):
        return now
    end = dt.time.fromisoformat(quiet[1])
    day = local.date() if local.time() < end else local.date() + dt.timedelta(days=1)
    # the quiet hours' end as a wall time; a gap (DST) moves it forward, fold=0 takes the first of two
    at = dt.datetime.combine(day, end, tzinfo=zone)
    at = at.astimezone(dt.timezone.utc)
    if expires is not None and at >= expires:
        return None
    return max(at, now)


def retry_delay(attempt: int, rng: random.Random | None = None, base: float = 2.0, cap: float = 600.0) -> float:
    """Seconds before retrying after failed attempt number `attempt` (1-based):
    exponential backoff with full jitter (AWS's "Exponential Backoff And Jitter")."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def due_reminder(start: dt.datetime, now: dt.datetime, offsets: tuple[int, ...] | list[int]) -> int | None:
    """Which reminder (minutes before) is due for a session starting at `start`:
    the nearest one whose time has come, none once it has started. A session
    booked 30 minutes ahead gets its 1-hour reminder, not the 24-hour one too."""
    if now >= start:
        return None
    due = [m for m in offsets if start - dt.timedelta(minutes=m) <= now]
    return min(due) if due else None


# ------------------------------------------------------------------ preferences
class NotificationPreferences(AttendWiseAggregate):
    """One person's choices. Absent preferences mean the defaults: each kind on
    its default channels, all reminders, no quiet hours, English."""

    CONTEXT = "notifications"

    class Created(Aggregate.Created):
        user_id: str

    @staticmethod
    def create_id(user_id: str) -> uuid.UUID:
        return preferences_id(user_id)

    @event(Created)
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.switched: dict[str, bool] = {}  # "kind:channel" -> on
        self.quiet_hours: tuple[str, str] | None = None
        self.reminders: list[int] = list(REMINDER_OFFSETS)
        self.locale = "en"
        self.addresses: dict[str, str] = {}  # push / sms

    class ChannelSwitched(Aggregate.Event):
        kind: str
        channel: str
        on: bool
        via: str  # "settings" or "unsubscribe link"

        def apply(self, p: "NotificationPreferences") -> None:
            p.switched[f"{self.kind}:{self.channel}"] = self.on

    class QuietHoursSet(Aggregate.Event):
        start: str | None
        end: str | None

        def apply(self, p: "NotificationPreferences") -> None:
            p.quiet_hours = (self.start, self.end) if self.start and self.end else None

    class RemindersSet(Aggregate.Event):
        minutes_before: list[int]

        def apply(self, p: "NotificationPreferences") -> None:
            p.reminders = list(self.minutes_before)

    class LocaleSet(Aggregate.Event):
        locale: str

        def apply(self, p: "NotificationPreferences") -> None:
            p.locale = self.locale

    class AddressSet(Aggregate.Event):
        PERSONAL = ("address",)  # a phone number or device token: erased with the person's key
        SUBJECT = "user_id"
        user_id: str
        channel: str
        address: str | None

        def apply(self, p: "NotificationPreferences") -> None:
            if self.address:
                p.addresses[self.channel] = self.address
            else:
                p.addresses.pop(self.channel, None)

    def switch(self, kind: str, channel: str, on: bool, via: str = "settings") -> None:
        check_kind(kind), check_channel(channel)
        if self.wants(kind, channel) != on:
            self.trigger_event(NotificationPreferences.ChannelSwitched, kind=kind, channel=channel, on=on, via=via)

    def set_quiet_hours(self, start: str | None, end: str | None) -> None:
        check_hhmm(start, "quiet_hours.start"), check_hhmm(end, "quiet_hours.end")
        if (start is None) != (end is None):
            raise InvalidInput("quiet hours need a start and an end, or neither", field="quiet_hours")
        new = (start, end) if start and end else None
        if new != self.quiet_hours:
            self.trigger_event(NotificationPreferences.QuietHoursSet, start=start, end=end)

    def set_reminders(self, minutes_before: list[int]) -> None:
        offsets = check_offsets(minutes_before)
        if offsets != self.reminders:
            self.trigger_event(NotificationPreferences.RemindersSet, minutes_before=offsets)

    def set_locale(self, locale: str) -> None:
        if not re.match(r"^[a-z]{2,3}(_[A-Z]{2})?$", locale):
            raise InvalidInput("a locale is like en, de or pt_BR", field="locale")
        if locale != self.locale:
            self.trigger_event(NotificationPreferences.LocaleSet, locale=locale)

    def set_address(self, channel: str, address: str | None) -> None:
        address = check_address(channel, address)
        if self.addresses.get(channel) != address:
            self.trigger_event(NotificationPreferences.AddressSet, user_id=self.user_id, channel=channel,
                               address=address)

    def wants(self, kind: str, channel: str) -> bool:
        """On or off, before asking whether there is an address to send to."""
        default_on = channel in KINDS[kind][0]
        return self.switched.get(f"{kind}:{channel}", default_on)

    def channels_for(self, kind: str) -> list[str]:
        """The channels this kind goes to: account links by email only; push
        and SMS only with an address."""
        if kind in EMAIL_ONLY:
            return ["email"]
        return [c for c in CHANNELS if self.wants(kind, c) and (c == "email" or c in self.addresses)]


def default_preferences(user_id: str) -> NotificationPreferences:
    """The defaults, for someone who never changed them (not saved)."""
    return NotificationPreferences(user_id=user_id)


# ------------------------------------------------------------------ the notification
class Notification(AttendWiseAggregate):
    CONTEXT = "notifications"

    class Queued(Aggregate.Created):
        PERSONAL = ("context",)  # names and excerpts shown in the message: erased with the recipient's key
        SUBJECT = "recipient_id"
        kind: str
        channel: str
        recipient_id: str
        source: str  # the source event's id, or the reminder it is
        context: dict[str, Any]
        send_after: dt.datetime
        expires: dt.datetime | None

    @staticmethod
    def create_id(source: str, kind: str, channel: str, recipient_id: str, **_: Any) -> uuid.UUID:
        return notification_id(source, kind, channel, recipient_id)

    @event(Queued)
    def __init__(self, kind: str, channel: str, recipient_id: str, source: str, context: dict[str, Any],
                 send_after: dt.datetime, expires: dt.datetime | None) -> None:
        self.kind, self.channel, self.recipient_id, self.source = kind, channel, recipient_id, source
        self.context, self.send_after, self.expires = context, send_after, expires
        self.status = "queued"  # queued, sending, retrying, sent, dead, skipped
        self.attempts = 0
        self.lease_until: dt.datetime | None = None
        self.next_at: dt.datetime = send_after

    class AttemptStarted(Aggregate.Event):
        attempt: int
        worker: str
        lease_until: dt.datetime

        def apply(self, n: "Notification") -> None:
            n.status, n.attempts, n.lease_until = "sending", self.attempt, self.lease_until

    class Sent(Aggregate.Event):
        attempt: int
        provider: str
        provider_id: str

        def apply(self, n: "Notification") -> None:
            n.status, n.lease_until = "sent", None

    class AttemptFailed(Aggregate.Event):
        attempt: int
        error: str
        retry_at: dt.datetime

        def apply(self, n: "Notification") -> None:
            n.status, n.next_at, n.lease_until = "retrying", self.retry_at, None

    class GaveUp(Aggregate.Event):
        """A dead letter: `attendwise notifications dead-letters` lists and retries them."""

        attempts: int
        error: str

        def apply(self, n: "Notification") -> None:
            n.status, n.lease_until = "dead", None

    class Requeued(Aggregate.Event):
        by: str
        at: dt.datetime

        def apply(self, n: "Notification") -> None:
            n.status, n.attempts, n.lease_until, n.next_at = "queued", 0, None, self.at

    class Skipped(Aggregate.Event):
        reason: str  # QUIET_HOURS, EXPIRED, NO_ADDRESS, RECIPIENT_GONE, SWITCHED_OFF

        def apply(self, n: "Notification") -> None:
            n.status, n.lease_until = "skipped", None

    def can_start(self, now: dt.datetime) -> bool:
        """Due, and nobody holds a live lease on it."""
        if self.status in ("queued", "retrying"):
            return self.next_at <= now
        return self.status == "sending" and self.lease_until is not None and self.lease_until <= now

    def start_attempt(self, worker: str, now: dt.datetime, lease: dt.timedelta) -> int:
        if not self.can_start(now):
            raise NotificationRefused("NOT_DUE", f"notification is {self.status}, not due")
        self.trigger_event(Notification.AttemptStarted, attempt=self.attempts + 1, worker=worker,
                           lease_until=now + lease)
        return self.attempts

    def sent(self, provider: str, provider_id: str) -> None:
        self.trigger_event(Notification.Sent, attempt=self.attempts, provider=provider, provider_id=provider_id)

    def failed(self, error: str, permanent: bool, now: dt.datetime, max_attempts: int = MAX_ATTEMPTS,
               delay: float | None = None) -> None:
        """A failed attempt: retried after a backoff, or a dead letter when it
        cannot succeed or the attempts are spent."""
        if permanent or self.attempts >= max_attempts:
            self.trigger_event(Notification.GaveUp, attempts=self.attempts, error=error[:500])
        else:
            wait = retry_delay(self.attempts) if delay is None else delay
            self.trigger_event(Notification.AttemptFailed, attempt=self.attempts, error=error[:500],
                               retry_at=now + dt.timedelta(seconds=wait))

    def skip(self, reason: str) -> None:
        if self.status not in ("sent", "skipped"):
            self.trigger_event(Notification.Skipped, reason=reason)

    def requeue(self, by: str, now: dt.datetime) -> None:
        if self.status != "dead":
            raise NotificationRefused("NOT_A_DEAD_LETTER", f"notification is {self.status}: only a dead letter is retried")
        self.trigger_event(Notification.Requeued, by=by, at=now)

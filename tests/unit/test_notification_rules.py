"""The notification rules: quiet hours, reminders, backoff, deterministic
ids, and the life of one notification."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.notifications import (
    REMINDER_OFFSETS, Notification, NotificationPreferences, NotificationRefused, due_reminder, in_quiet_hours,
    notification_id, retry_delay, send_after,
)

UTC = dt.timezone.utc
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Apia"]
times = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC))
hhmm = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")


@settings(max_examples=400, deadline=None)
@given(now=times, start=hhmm, end=hhmm, zone=st.sampled_from(ZONES))
def test_a_held_message_goes_at_the_first_moment_outside_quiet_hours(now: dt.datetime, start: str, end: str,
                                                                     zone: str) -> None:
    at = send_after(now, "session_changed", (start, end), zone)
    assert at is not None and at >= now
    local = at.astimezone(zoneinfo.ZoneInfo(zone))
    if at == now:
        assert not in_quiet_hours(now.astimezone(zoneinfo.ZoneInfo(zone)).time(), start, end)
    else:
        assert in_quiet_hours(now.astimezone(zoneinfo.ZoneInfo(zone)).time(), start, end)
        assert not in_quiet_hours(local.time(), start, end)  # it leaves quiet hours...
        assert at - now <= dt.timedelta(hours=25)  # ...within a day (a DST day is 25 hours)
        before = (at - dt.timedelta(minutes=1)).astimezone(zoneinfo.ZoneInfo(zone))
        assert in_quiet_hours(before.time(), start, end) or at - now < dt.timedelta(minutes=1)


@given(now=times, zone=st.sampled_from(ZONES))
def test_transactional_messages_ignore_quiet_hours(now: dt.datetime, zone: str) -> None:
    for kind in ("email_verification", "password_reset", "checkin_succeeded", "checkin_failed"):
        assert send_after(now, kind, ("00:00", "23:59"), zone) == now


def test_a_reminder_the_quiet_hours_outlast_is_dropped() -> None:
    now = dt.datetime(2031, 3, 4, 17, 10, tzinfo=UTC)  # 18:10 in Berlin
    start = dt.datetime(2031, 3, 4, 18, 0, tzinfo=UTC)
    assert send_after(now, "session_reminder", ("18:00", "08:00"), "Europe/Berlin", expires=start) is None
    held = send_after(now, "session_reminder", ("18:00", "18:30"), "Europe/Berlin", expires=start)
    assert held == dt.datetime(2031, 3, 4, 17, 30, tzinfo=UTC)


@settings(max_examples=300)
@given(start=times, offsets=st.lists(st.sampled_from(REMINDER_OFFSETS), min_size=1, unique=True),
       steps=st.lists(st.integers(1, 600), min_size=1, max_size=60))
def test_each_reminder_falls_due_once_in_its_window_and_none_after_the_start(
        start: dt.datetime, offsets: list[int], steps: list[int]) -> None:
    """Sweeps at random moments: whichever reminder is due is one of the
    chosen ones, due only inside its window, and never once the session began."""
    now = start - dt.timedelta(minutes=1500)
    for step in steps:
        now += dt.timedelta(minutes=step)
        due = due_reminder(start, now, offsets)
        if now >= start:
            assert due is None
        elif due is not None:
            assert due in offsets and start - dt.timedelta(minutes=due) <= now
            nearer = [m for m in offsets if m < due]
            assert all(start - dt.timedelta(minutes=m) > now for m in nearer)  # the nearest one that is due


def test_booking_late_gets_only_the_nearest_reminder() -> None:
    start = dt.datetime(2031, 1, 1, 12, tzinfo=UTC)
    assert due_reminder(start, start - dt.timedelta(minutes=30), [1440, 60]) == 60
    assert due_reminder(start, start - dt.timedelta(hours=5), [1440, 60]) == 1440
    assert due_reminder(start, start - dt.timedelta(hours=5), [60]) is None
    assert due_reminder(start, start - dt.timedelta(days=2), [1440, 60]) is None


@given(attempt=st.integers(1, 30), seed=st.integers())
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempt: int, seed: int) -> None:
    d = retry_delay(attempt, random.Random(seed), base=2.0, cap=600.0)
    ceiling = min(600.0, 2.0 * 2 ** (attempt - 1))
    assert ceiling / 2 <= d <= ceiling


def test_ids_are_derived_from_cause_kind_channel_and_person() -> None:
    a = notification_id("e1", "session_cancelled", "email", "u1")
    assert a == notification_id("e1", "session_cancelled", "email", "u1")
    assert len({a, notification_id("e2", "session_cancelled", "email", "u1"),
                notification_id("e1", "session_cancelled", "sms", "u1"),
                notification_id("e1", "session_cancelled", "email", "u2"),
                notification_id("e1", "session_changed", "email", "u1")}) == 5


def queued(now: dt.datetime) -> Notification:
    return Notification(kind="session_changed", channel="email", recipient_id="u1", source="e1", context={},
                        send_after=now, expires=None)


def test_a_notification_is_attempted_by_one_worker_at_a_time_and_given_up_after_the_last_attempt() -> None:
    now = dt.datetime(2031, 1, 1, tzinfo=UTC)
    n = queued(now)
    lease = dt.timedelta(seconds=60)
    n.start_attempt("w1", now, lease)
    with pytest.raises(NotificationRefused):
        n.start_attempt("w2", now + dt.timedelta(seconds=10), lease)  # w1 holds the lease
    n.start_attempt("w2", now + dt.timedelta(seconds=61), lease)  # w1 died: its lease ran out
    n.failed("SMTP 451", permanent=False, now=now, max_attempts=3, delay=5)
    assert n.status == "retrying" and not n.can_start(now + dt.timedelta(seconds=4))
    n.start_attempt("w1", now + dt.timedelta(seconds=5), lease)
    n.failed("SMTP 451", permanent=False, now=now, max_attempts=3)
    assert n.status == "dead" and n.attempts == 3
    n.requeue("operator", now)
    assert n.status == "queued" and n.attempts == 0 and n.can_start(now)
    n.start_attempt("w1", now, lease)
    n.sent("smtp", "<id>")
    with pytest.raises(NotificationRefused):
        n.requeue("operator", now)  # only a dead letter is retried


def test_a_permanent_error_is_a_dead_letter_at_once() -> None:
    now = dt.datetime(2031, 1, 1, tzinfo=UTC)
    n = queued(now)
    n.start_attempt("w1", now, dt.timedelta(seconds=60))
    n.failed("SMTP 550 no such mailbox", permanent=True, now=now)
    assert n.status == "dead" and n.attempts == 1


def test_preferences_defaults_switches_and_addresses() -> None:
    p = NotificationPreferences(user_id="u1")
    assert p.channels_for("session_cancelled") == ["email"]  # push and SMS need an address
    p.set_address("sms", "+4915112345678")
    p.set_address("push", "device-token-1")
    assert p.channels_for("session_cancelled") == ["email", "push", "sms"]
    assert p.channels_for("reply_to_post") == ["email", "push"]  # SMS is off for chatter by default
    p.switch("session_cancelled", "email", False)
    assert p.channels_for("session_cancelled") == ["push", "sms"]
    assert p.channels_for("email_verification") == ["email"]  # transactional
    with pytest.raises(InvalidInput):
        p.set_address("sms", "0151 123")
    with pytest.raises(InvalidInput):
        p.set_quiet_hours("22:00", None)
    with pytest.raises(InvalidInput):
        p.set_reminders([30])
    with pytest.raises(InvalidInput):
        p.switch("newsletter", "email", True)

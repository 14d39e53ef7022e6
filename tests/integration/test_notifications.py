"""Notifications end to end in one process (the embedded default's notifier
following the log), delivered to a real SMTP server on loopback (aiosmtpd)
and a real local HTTP receiver for push and SMS: command -> event -> the
message a person gets. The clock is the container's, moved by the test."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.errors import ServiceUnavailable
from api.bootstrap import build
from api.http import create_app
from api.settings import Settings
from commands.messages import CommandContext
from commands.notifier import Notifier
from infra.smtp_sink import SmtpSink
from tests.integration.test_checkin import START, Clock, scan, series, ticket
from tests.integration.test_communities import PASSWORD, World, eventually
from tests.webhook_receiver import WebhookReceiver


class TickingClock(Clock):
    """A clock set by the test that keeps running from there (retries and
    leases fall due as they would)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    @property
    def now(self) -> dt.datetime:  # type: ignore[override]
        return self._base + dt.timedelta(seconds=time.monotonic() - self._set_at)

    @now.setter
    def now(self, value: dt.datetime) -> None:
        self._base, self._set_at = value, time.monotonic()

    def __call__(self) -> dt.datetime:
        return self.now


class Town(World):
    def __init__(self, client: TestClient, container, clock: Clock, sink: SmtpSink,  # type: ignore[no-untyped-def]
                 push: WebhookReceiver, sms: WebhookReceiver) -> None:
        super().__init__(client, container)
        self.clock, self.sink, self.push, self.sms = clock, sink, push, sms

    def mails(self, who: str, subject: str = "", count: int = 1, timeout: float = 15) -> list[EmailMessage]:
        to = f"{who}@example.org"
        return self.sink.wait_for(lambda m: m["To"] == to and subject.lower() in m["Subject"].lower(), count=count,
                                  timeout=timeout)

    def inbox(self, who: str) -> list[EmailMessage]:
        return [m for m in self.sink.messages() if m["To"] == f"{who}@example.org"]

    def events(self, event_type: str) -> list:
        return [e for e in self.c.event_log.read(0, 1_000_000) if e.event_type == event_type]

    def quiet_period(self) -> None:
        """Give the notifier time to do what it would wrongly do (a second send)."""
        self.settle()
        head = self.c.event_log.head()
        eventually(lambda: self.c.readmodels.position("notifier") >= head or None)
        time.sleep(0.6)  # a few sweeps and reminder rounds


def body(m: EmailMessage) -> str:
    return m.get_body(("plain",)).get_content()


@pytest.fixture
def town(tmp_path: Path) -> Iterator[Town]:
    with SmtpSink() as sink, WebhookReceiver() as push, WebhookReceiver() as sms:
        container = build(Settings(
            data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None, neo4j_uri=None, s3_endpoint=None,
            rate_limits=False, smtp_url=sink.url, push_webhook_url=push.url + "/v1/projects/aw/messages:send",
            sms_webhook_url=sms.url + "/2010-04-01/Accounts/AC1/Messages.json", webhook_secret="s3cret",
            notify_sweep_every=0.1, notify_reminders_every=0.1, notify_retry_base=0.05, notify_max_attempts=3,
            public_url="http://testserver"))
        clock = TickingClock(START - dt.timedelta(days=7))
        container.clock = clock
        with TestClient(create_app(container)) as client:
            yield Town(client, container, clock, sink, push, sms)
        container.close()


def link(m: EmailMessage, path: str) -> str:
    found = re.search(rf"http://testserver({re.escape(path)}\?token=[\w.\-]+)", body(m))
    assert found, body(m)
    return found.group(1)


# ------------------------------------------------------------------ identity
def test_registration_mails_a_verification_link_that_verifies_once(town: Town) -> None:
    town.person("ada")
    [mail] = town.mails("ada", "confirm")
    assert mail["Message-ID"].startswith("<") and "List-Unsubscribe" not in mail  # transactional: no unsubscribe
    assert town.call("ada", "GET", "/me", 200)["email_verified"] is False
    assert town.client.get(link(mail, "/auth/verify-email")).status_code == 204
    assert town.call("ada", "GET", "/me", 200)["email_verified"] is True
    town.quiet_period()
    assert len(town.inbox("ada")) == 1  # one event, one message, however often the sweeps ran


def test_password_reset_by_mail_works_once_and_ends_old_logins(town: Town) -> None:
    town.person("bea")
    refresh = town.client.post("/auth/token", data={"grant_type": "password", "username": "bea@example.org",
                                                    "password": PASSWORD}).json()["refresh_token"]
    assert town.client.post("/auth/password-reset", json={"email": "nobody@example.org"}).status_code == 202
    assert town.client.post("/auth/password-reset", json={"email": "bea@example.org"}).status_code == 202
    [mail] = town.mails("bea", "reset")
    url = link(mail, "/auth/reset-password")
    assert "<form" in town.client.get(url).text
    token = url.split("token=")[1]
    new = "a brand new passphrase"
    assert town.client.post("/auth/reset-password", data={"token": token, "new_password": new}).status_code == 204
    again = town.client.post("/auth/reset-password", data={"token": token, "new_password": new + "!"})
    assert again.status_code == 401 and again.json()["code"] == "TOKEN_INVALID"
    login = town.client.post("/auth/token", data={"grant_type": "password", "username": "bea@example.org",
                                                  "password": new})
    assert login.status_code == 200
    assert town.client.post("/auth/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": refresh}).status_code == 401
    assert not [m for m in town.sink.messages() if m["To"] == "nobody@example.org"]


# ------------------------------------------------------------------ check-in
def test_check_in_confirmation_and_failure_reach_the_member(town: Town) -> None:
    for name in ("host", "ann"):
        town.person(name)
    sid = series(town, "host")[0]
    town.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    token = ticket(town, "ann", sid)
    town.clock.now = START - dt.timedelta(minutes=10)
    assert scan(town, "host", token, gate="north")[0] == 200
    [ok] = town.mails("ann", "checked in")
    assert "Choir" in body(ok) and "north" in body(ok)
    assert scan(town, "host", token)[1]["code"] == "TICKET_ALREADY_USED"
    [failed] = town.mails("ann", "check-in failed")
    assert "TICKET_ALREADY_USED" in body(failed)


def test_waitlist_promotion_is_announced(town: Town) -> None:
    for name in ("host", "ann", "ben"):
        town.person(name)
    sid = series(town, "host", capacity=1)[0]
    town.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "session"})
    assert town.call("ben", "POST", f"/sessions/{sid}/places", 200, json={})["standings"] == {sid: "waitlisted"}
    town.call("ann", "DELETE", f"/sessions/{sid}/places", 200)
    [mail] = town.mails("ben", "place")
    assert "Choir" in body(mail)
    assert not [m for m in town.inbox("ann") if "place" in m["Subject"].lower()]


# ------------------------------------------------------------------ scheduling
def test_session_changes_and_cancellations_reach_everyone_with_a_place(town: Town) -> None:
    for name in ("host", "ann", "ben", "cy"):
        town.person(name)
    sid, nxt, _ = series(town, "host")
    for name in ("ann", "ben"):
        town.call(name, "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    town.call("host", "PATCH", f"/sessions/{sid}", 204, json={"start": "2031-03-04T19:30:00"})
    for name in ("ann", "ben"):
        [mail] = town.mails(name, "changed")
        assert "7:30 PM" in body(mail) and "6:00 PM" in body(mail)  # the new time and the old one
    town.call("host", "POST", f"/sessions/{nxt}/cancel", 204, json={"reason": "the hall is flooded"})
    for name in ("ann", "ben"):
        [mail] = town.mails(name, "cancelled")
        assert "the hall is flooded" in body(mail)
        assert mail["List-Unsubscribe"] and mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not [m for m in town.inbox("cy") if "Choir" in m["Subject"]]  # no place, no message


def test_reminders_come_once_each_at_24_hours_and_1_hour(town: Town) -> None:
    for name in ("host", "ann"):
        town.person(name)
    sid = series(town, "host")[0]
    town.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    town.quiet_period()
    assert not [m for m in town.inbox("ann") if "reminder" in m["Subject"].lower()]  # a week ahead: none yet
    town.clock.now = START - dt.timedelta(hours=23)
    [day] = town.mails("ann", "reminder")
    assert "24 hours" in body(day)
    town.quiet_period()
    town.clock.now = START - dt.timedelta(minutes=50)
    reminders = town.mails("ann", "reminder", count=2)
    assert "1 hour" in body(reminders[1])
    town.quiet_period()
    assert len([m for m in town.inbox("ann") if "reminder" in m["Subject"].lower()]) == 2


# ------------------------------------------------------------------ community
def test_join_approval_and_replies_to_my_post(town: Town) -> None:
    for name in ("admin", "ann", "ben"):
        town.person(name)
    cid = town.call("admin", "POST", "/communities", 201, json={"name": "Night Owls", "visibility": "private"})["id"]
    town.call("ann", "POST", f"/communities/{cid}/join", 200)
    town.call("admin", "POST", f"/communities/{cid}/requests/{town.ids['ann']}/approve", 204)
    [mail] = town.mails("ann", "Night Owls")
    assert "approved" in body(mail).lower() or "welcome" in body(mail).lower()
    town.call("ben", "POST", f"/communities/{cid}/join", 200)
    town.call("admin", "POST", f"/communities/{cid}/requests/{town.ids['ben']}/approve", 204)
    post = town.call("ann", "POST", f"/communities/{cid}/posts", 201, json={"text": "Who brings the telescope?"})["id"]
    town.call("ann", "POST", f"/posts/{post}/comments", 201, json={"text": "I will ask around"})  # her own: no mail
    town.call("ben", "POST", f"/posts/{post}/comments", 201, json={"text": "Mine is free on Friday"})
    [reply] = town.mails("ann", "repl")
    assert "Mine is free on Friday" in body(reply) and "Ben" in body(reply)
    town.quiet_period()
    assert len([m for m in town.inbox("ann") if "repl" in m["Subject"].lower()]) == 1


# ------------------------------------------------------------------ preferences
def test_switched_off_and_unsubscribed_kinds_stay_silent(town: Town) -> None:
    for name in ("host", "ann", "ben"):
        town.person(name)
    sid, nxt, last = series(town, "host")
    for name in ("ann", "ben"):
        town.call(name, "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    prefs = town.call("ann", "PUT", "/me/notification-preferences", 200,
                      json={"channels": {"session_cancelled": {"email": False}}})
    assert prefs["channels"]["session_cancelled"]["email"] is False
    town.call("host", "POST", f"/sessions/{sid}/cancel", 204, json={"reason": "storm"})
    [mail] = town.mails("ben", "cancelled")
    unsubscribe = mail["List-Unsubscribe"].strip("<>").replace("http://testserver", "")
    assert town.client.post(unsubscribe).status_code == 200  # RFC 8058 one-click, no login
    assert "no longer" in town.client.get(unsubscribe).text  # a second click changes nothing
    town.call("host", "POST", f"/sessions/{nxt}/cancel", 204, json={"reason": "storm again"})
    town.quiet_period()
    assert not [m for m in town.inbox("ann") if "cancelled" in m["Subject"].lower()]
    assert len([m for m in town.inbox("ben") if "cancelled" in m["Subject"].lower()]) == 1
    assert town.call("ben", "GET", "/me/notification-preferences", 200)["channels"]["session_cancelled"]["email"] is False
    bad = town.client.get("/notifications/unsubscribe", params={"token": unsubscribe.split("token=")[1][:-3] + "AAA"})
    assert bad.status_code == 401


def test_quiet_hours_hold_messages_and_drop_reminders_they_outlast(town: Town) -> None:
    for name in ("host", "ann"):
        town.person(name)
    town.call("ann", "PATCH", "/me", 200, json={"time_zone": "Europe/Berlin"})
    town.call("ann", "PUT", "/me/notification-preferences", 200,
              json={"quiet_hours": {"start": "18:00", "end": "08:00"}, "locale": "de"})
    sid = series(town, "host")[0]  # 18:00 UTC = 19:00 in Berlin, inside her quiet hours
    town.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    town.clock.now = dt.datetime(2031, 3, 3, 20, 0, tzinfo=dt.timezone.utc)  # 21:00 Berlin: quiet
    town.call("host", "PATCH", f"/sessions/{sid}", 204, json={"location": {"name": "Aula"}})
    town.quiet_period()
    assert not [m for m in town.inbox("ann") if "changed" in m["Subject"].lower()]
    town.clock.now = dt.datetime(2031, 3, 4, 7, 1, tzinfo=dt.timezone.utc)  # 08:01 Berlin: quiet hours over
    [changed] = town.mails("ann", "changed")
    assert "März" in body(changed) and "19:00" in body(changed)  # her locale, her zone
    town.clock.now = START - dt.timedelta(minutes=55)  # the 1-hour reminder falls in quiet hours, past the start
    town.quiet_period()
    skipped = [r for r in town.c.readmodels.rows("notifications", where={"kind": "session_reminder"})
               if r["user_id"] == town.ids["ann"] and r["skip_reason"] == "QUIET_HOURS"]
    assert skipped and not [m for m in town.inbox("ann") if "reminder" in m["Subject"].lower()
                            and "1 hour" in body(m)]


def test_push_and_sms_go_to_the_providers_in_their_shapes(town: Town) -> None:
    import hashlib
    import hmac

    for name in ("host", "ann"):
        town.person(name)
    town.call("ann", "PUT", "/me/notification-preferences", 200,
              json={"push_token": "device-token-123", "phone": "+4915112345678"})
    bad = town.client.put("/me/notification-preferences", headers=town.auth["ann"], json={"phone": "0151 123"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_INPUT"
    sid = series(town, "host")[0]
    town.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    town.call("host", "POST", f"/sessions/{sid}/cancel", 204, json={"reason": "ill"})
    [push] = town.push.wait_for(1)
    assert push.json["message"]["token"] == "device-token-123" and "Choir" in push.json["message"]["notification"]["body"]
    assert push.json["message"]["data"]["kind"] == "session_cancelled"
    [sms] = town.sms.wait_for(1)
    assert sms.form["To"] == "+4915112345678" and "Choir" in sms.form["Body"]
    for r in (push, sms):
        expected = "sha256=" + hmac.new(b"s3cret", r.body, hashlib.sha256).hexdigest()
        assert r.headers["X-AttendWise-Signature"] == expected and r.headers["Idempotency-Key"]
    town.mails("ann", "cancelled")


# ------------------------------------------------------------------ delivery guarantees
def test_provider_errors_are_retried_then_dead_lettered_and_retried_by_an_operator(town: Town) -> None:
    town.sink.fail_next(2, 451)  # the two first attempts meet a busy server
    town.person("ann")
    [mail] = town.mails("ann", "confirm")
    nid = mail["Message-ID"].strip("<>").split("@")[0]
    eventually(lambda: [e for e in town.events("NotificationSent") if e.aggregate_id == nid] or None)  # recorded after
    history = [e.event_type for e in town.events("NotificationAttemptFailed") + town.events("NotificationSent")
               if e.aggregate_id == nid]
    assert history.count("NotificationAttemptFailed") == 2 and history.count("NotificationSent") == 1

    town.sink.fail_next(1, 550)  # a permanent refusal: no retry, a dead letter at once
    town.person("ben")
    eventually(lambda: town.c.readmodels.rows("notifications", where={"status": "dead"}) or None)
    [dead] = town.c.readmodels.rows("notifications", where={"status": "dead"})
    assert dead["user_id"] == town.ids["ben"] and "550" in dead["last_error"] and dead["attempts"] == 1
    assert not town.inbox("ben")
    town.c.app.retry_dead_letter(uuid.UUID(dead["id"]), CommandContext.system("operator:test"), town.clock())
    town.mails("ben", "confirm")


def test_a_redelivered_event_never_sends_a_second_message(town: Town) -> None:
    town.person("ann")
    town.mails("ann", "confirm")
    [registered] = town.events("UserRegistered")
    notifier = Notifier(town.c.app, town.c.readmodels, {"email": None, "push": None, "sms": None},  # type: ignore[dict-item]
                        clock=town.c.clock)
    assert notifier.queue_event(registered) == []  # queued before: nothing to send
    town.quiet_period()
    assert len(town.inbox("ann")) == 1
    assert len([e for e in town.events("NotificationQueued") if e.data["recipient_id"] == town.ids["ann"]]) == 1


def test_a_send_the_store_could_not_record_at_once_is_recorded_when_it_is_back_not_sent_again(
        town: Town, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider took the message, then the event store was down for a
    moment (shorter than the lease): the notifier waits and records the send;
    no other attempt starts and the member gets one mail."""
    record, failures = town.c.app.record_outcome, []

    def store_down_twice(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(failures) < 2:
            failures.append(time.monotonic())
            raise ServiceUnavailable("PostgreSQL", "ATTENDWISE_DATABASE_URL", "test", "stopped for a moment")
        return record(*args, **kwargs)

    monkeypatch.setattr(town.c.app, "record_outcome", store_down_twice)
    town.person("ann")
    [mail] = town.mails("ann", "confirm")
    nid = mail["Message-ID"].strip("<>").split("@")[0]
    eventually(lambda: [e for e in town.events("NotificationSent") if e.aggregate_id == nid] or None)
    town.quiet_period()
    assert len(failures) == 2
    assert len(town.inbox("ann")) == 1
    assert [e.data["attempt"] for e in town.events("NotificationAttemptStarted") if e.aggregate_id == nid] == [1]


def test_people_read_their_own_delivery_history_in_graphql(town: Town) -> None:
    for name in ("ann", "ben"):
        town.person(name)
    town.mails("ann", "confirm")
    town.mails("ben", "confirm")
    query = "{ myNotifications(first: 5) { edges { node { kind channel status attempts sentAt } } } }"
    def sent() -> list | None:
        edges = town.gql("ann", query)["data"]["myNotifications"]["edges"]
        return edges if edges and all(e["node"]["sentAt"] for e in edges) else None

    mine = eventually(sent)
    assert [e["node"]["kind"] for e in mine] == ["email_verification"]  # hers only, not ben's
    assert mine[0]["node"]["status"] == "sent" and mine[0]["node"]["attempts"] == 1
    assert town.gql(None, query)["errors"][0]["extensions"]["code"] == "TOKEN_INVALID"

"""Contract of the notification `Channel` port, once for every adapter: SMTP
against a real SMTP server (infra.smtp_sink), the FCM-shaped webhook against
a real local HTTP receiver, and the outbox folder. Each adapter sits behind a
small harness whose reader returns what arrived in one common form, so the
contract tests never look at how an adapter delivers.

Then what only one adapter does: SMTP's multipart and List-Unsubscribe
headers, the Twilio form, the webhook signature, the outbox file."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.notify_channels import Channel, DeliveryFailed, Message, OutboxChannel, SmtpChannel, WebhookChannel
from infra.smtp_sink import SmtpSink
from tests.processes import free_port
from tests.webhook_receiver import WebhookReceiver

SENDER = "AttendWise <noreply@attendwise.test>"


@dataclass(frozen=True)
class Delivered:
    """What a recipient got, whatever the adapter."""

    to: str
    subject: str
    text: str
    id: str


class Harness:
    """One adapter, the provider it talks to, and a reader of that provider."""

    name: str

    def channel(self) -> Channel: ...

    def unreachable(self) -> Channel: ...

    def delivered(self, count: int) -> list[Delivered]:
        """Everything accepted, once at least `count` deliveries arrived."""
        ...

    def fail_next(self, permanent: bool) -> None: ...


class SmtpHarness(Harness):
    name = "smtp"

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def channel(self) -> Channel:
        return SmtpChannel(self.sink.url, SENDER, timeout=5)

    def unreachable(self) -> Channel:
        return SmtpChannel(f"smtp://127.0.0.1:{free_port()}", SENDER, timeout=2)

    def delivered(self, count: int) -> list[Delivered]:
        self.sink.wait_for(count=count, timeout=5)
        return [Delivered(str(m["To"]), str(m["Subject"]), m.get_body(("plain",)).get_content().strip(),
                          str(m["Message-ID"]).strip("<>").removesuffix("@attendwise"))
                for m in self.sink.messages()]

    def fail_next(self, permanent: bool) -> None:
        self.sink.fail_next(1, 550 if permanent else 451)


class WebhookHarness(Harness):
    name = "webhook:fcm"

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    def channel(self) -> Channel:
        return WebhookChannel(f"{self.receiver.url}/v1/projects/test/messages:send", "fcm", timeout=5)

    def unreachable(self) -> Channel:
        return WebhookChannel(f"http://127.0.0.1:{free_port()}/fcm", "fcm", timeout=2)

    def delivered(self, count: int) -> list[Delivered]:
        self.receiver.wait_for(count, timeout=5)
        out = []
        for r in self.receiver.accepted():
            m = r.json["message"]
            out.append(Delivered(m["token"], m["notification"]["title"], m["notification"]["body"],
                                 r.headers["Idempotency-Key"]))
        return out

    def fail_next(self, permanent: bool) -> None:
        self.receiver.fail_next(1, 400 if permanent else 503)


class OutboxHarness(Harness):
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def channel(self) -> Channel:
        return OutboxChannel(self.folder)

    def unreachable(self) -> Channel:
        pytest.skip("the outbox has no provider to reach")

    def delivered(self, count: int) -> list[Delivered]:
        files = sorted(self.folder.glob("*.json"))
        records = [(p.stem, json.loads(p.read_text())) for p in files]
        assert all(stem == r["id"] for stem, r in records)
        return [Delivered(r["to"], r["subject"], r["text"], stem) for stem, r in records]

    def fail_next(self, permanent: bool) -> None:
        pytest.skip("the outbox has no provider that could refuse")


@pytest.fixture(params=["smtp", "webhook", "outbox"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "smtp":
        with SmtpSink() as sink:
            yield SmtpHarness(sink)
    elif request.param == "webhook":
        with WebhookReceiver() as receiver:
            yield WebhookHarness(receiver)
    else:
        yield OutboxHarness(tmp_path / "outbox")


def message(**changes: Any) -> Message:
    base = Message(id=str(uuid.uuid4()), channel="email", to="ada@example.org",
                   subject="Reminder: Yoga starts in 1 hour", text="Yoga starts in 1 hour: Mar 29, 2026, 10:00 AM.",
                   data={"kind": "session_reminder"})
    return replace(base, **changes)


def send(channel: Channel, *messages: Message) -> list[str]:
    """Send in order on one event loop, then close the channel."""
    async def run() -> list[str]:
        try:
            return [await channel.send(m) for m in messages]
        finally:
            await channel.close()

    return asyncio.run(run())


def refusal(channel: Channel, msg: Message) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as e:
        send(channel, msg)
    return e.value


# ---------------------------------------------------------------- the contract
def test_a_message_arrives_once_with_its_id(harness: Harness) -> None:
    msg = message()
    [provider_id] = send(harness.channel(), msg)
    assert provider_id
    assert harness.delivered(1) == [Delivered(msg.to, msg.subject, msg.text, msg.id)]


def test_a_resend_carries_the_same_id(harness: Harness) -> None:
    msg, other = message(), message(to="grace@example.org")
    send(harness.channel(), msg, msg, other)
    expected = 2 if harness.name == "outbox" else 3  # the outbox replaces the file of a resend
    got = harness.delivered(expected)
    assert len(got) == expected
    assert sorted(d.id for d in got if d.to == msg.to) == [msg.id] * (expected - 1)


def test_a_transient_refusal_is_retryable(harness: Harness) -> None:
    harness.fail_next(permanent=False)
    channel, msg = harness.channel(), message()
    failed = refusal(channel, msg)
    assert failed.permanent is False and failed.reason
    send(harness.channel(), msg)  # the retry goes through
    assert [d.id for d in harness.delivered(1)] == [msg.id]


def test_a_permanent_refusal_says_so(harness: Harness) -> None:
    harness.fail_next(permanent=True)
    failed = refusal(harness.channel(), message())
    assert failed.permanent is True and failed.reason


def test_an_unreachable_provider_is_transient(harness: Harness) -> None:
    failed = refusal(harness.unreachable(), message())
    assert failed.permanent is False
    assert "127.0.0.1" in failed.reason


def test_a_channel_outlives_an_event_loop(harness: Harness) -> None:
    channel, first, second = harness.channel(), message(), message()
    asyncio.run(channel.send(first))  # no close: the notifier keeps its channels across loops in tests
    send(channel, second)
    assert sorted(d.id for d in harness.delivered(2)) == sorted([first.id, second.id])


# ---------------------------------------------------------------- SMTP
@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_smtp_sends_text_and_html_alternatives_with_one_click_unsubscribe(sink: SmtpSink) -> None:
    msg = message(html="<p>Yoga starts in <b>1 hour</b></p>", unsubscribe_url="https://app.test/u/tok")
    [message_id] = send(SmtpChannel(sink.url, SENDER), msg)
    [mail] = sink.wait_for(count=1, timeout=5)
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == msg.text
    assert mail.get_body(("html",)).get_content().strip() == msg.html
    assert mail["List-Unsubscribe"] == "<https://app.test/u/tok>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] == message_id == f"<{msg.id}@attendwise>"
    assert email.utils.parseaddr(str(mail["From"]))[1] == "noreply@attendwise.test"


def test_smtp_plain_message_has_no_html_and_no_unsubscribe_headers(sink: SmtpSink) -> None:
    send(SmtpChannel(sink.url, SENDER), message())
    [mail] = sink.wait_for(count=1, timeout=5)
    assert mail.get_content_type() == "text/plain"
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None


def test_smtp_refusal_reason_names_the_code_not_the_address(sink: SmtpSink) -> None:
    sink.fail_next(1, 554)
    failed = refusal(SmtpChannel(sink.url, SENDER), message())
    assert failed.permanent and failed.reason.startswith("SMTP 554")
    assert "ada@example.org" not in failed.reason


def test_smtp_url_forms() -> None:
    plain = SmtpChannel("smtp://mail.example.org", SENDER)
    assert (plain.host, plain.port, plain.use_tls, plain.start_tls, plain.username) == \
        ("mail.example.org", 25, False, None, None)
    tls = SmtpChannel("smtps://user:p%40ss@mail.example.org", SENDER)
    assert (tls.port, tls.use_tls, tls.start_tls, tls.username, tls.password) == (465, True, False, "user", "p@ss")
    starttls = SmtpChannel("smtp://mail.example.org?starttls=1", SENDER)
    assert (starttls.port, starttls.start_tls) == (587, True)
    with pytest.raises(ValueError):
        SmtpChannel("http://mail.example.org", SENDER)


# ---------------------------------------------------------------- webhooks
@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def test_fcm_shape_with_data_and_provider_name(receiver: WebhookReceiver) -> None:
    msg = message(channel="push", to="device-token-1", data={"kind": "session_reminder", "session_id": "s1"})
    [provider_id] = send(WebhookChannel(receiver.url + "/fcm", "fcm"), msg)
    [req] = receiver.wait_for(1)
    assert req.path == "/fcm" and req.headers["Content-Type"] == "application/json"
    assert req.json == {"message": {"token": "device-token-1",
                                    "notification": {"title": msg.subject, "body": msg.text},
                                    "data": {"kind": "session_reminder", "session_id": "s1"}}}
    assert provider_id == "projects/test/messages/1"
    assert req.headers["X-AttendWise-Signature"] is None  # no secret, no signature


def test_twilio_shape_is_a_form_and_returns_the_sid(receiver: WebhookReceiver) -> None:
    msg = message(channel="sms", to="+4915112345678")
    [provider_id] = send(WebhookChannel(receiver.url + "/Messages.json", "twilio", sender="+4930123456"), msg)
    [req] = receiver.wait_for(1)
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.form == {"To": "+4915112345678", "From": "+4930123456", "Body": msg.text}
    assert req.headers["Idempotency-Key"] == msg.id
    assert provider_id.startswith("SM")


@pytest.mark.parametrize("shape", ["fcm", "twilio"])
def test_the_signature_verifies_over_the_raw_body(receiver: WebhookReceiver, shape: str) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    send(WebhookChannel(receiver.url, shape, secret=secret), message(channel="sms", to="+4915112345678"))
    [req] = receiver.wait_for(1)
    expected = "sha256=" + hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["X-AttendWise-Signature"], expected)
    tampered = hmac.new(secret.encode(), req.body + b"x", hashlib.sha256).hexdigest()
    assert req.headers["X-AttendWise-Signature"] != "sha256=" + tampered


@pytest.mark.parametrize(("status", "permanent"),
                         [(408, False), (429, False), (500, False), (502, False), (400, True), (401, True),
                          (404, True), (410, True)])
def test_webhook_status_classes(receiver: WebhookReceiver, status: int, permanent: bool) -> None:
    receiver.fail_next(1, status)
    failed = refusal(WebhookChannel(receiver.url, "fcm"), message(channel="push", to="tok"))
    assert failed.permanent is permanent and str(status) in failed.reason


def test_unknown_webhook_shape_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="shape"):
        WebhookChannel("http://127.0.0.1:1", "carrier-pigeon")


# ---------------------------------------------------------------- outbox
def test_outbox_file_holds_the_whole_message_and_the_log_not_the_text(tmp_path: Path) -> None:
    outbox = OutboxChannel(tmp_path)
    msg = message(html="<p>hi</p>", unsubscribe_url="https://app.test/u/tok")
    with capture_logs() as logs:
        [returned] = send(outbox, msg)
    assert returned == msg.id
    [record] = outbox.messages()
    assert record.pop("written_at")
    assert record == {"id": msg.id, "channel": "email", "to": msg.to, "subject": msg.subject, "text": msg.text,
                      "html": "<p>hi</p>", "unsubscribe_url": "https://app.test/u/tok",
                      "data": {"kind": "session_reminder"}}
    [entry] = [e for e in logs if e["event"] == "notification_written"]
    assert entry["id"] == msg.id and entry["channel"] == "email" and entry["path"].endswith(f"{msg.id}.json")
    assert msg.text not in json.dumps(entry)


def test_outbox_messages_are_in_writing_order(tmp_path: Path) -> None:
    outbox = OutboxChannel(tmp_path)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    send(outbox, *[message(id=i) for i in ids])
    assert [m["id"] for m in outbox.messages()] == ids
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_outbox_that_cannot_be_written_is_transient(tmp_path: Path) -> None:
    outbox = OutboxChannel(tmp_path / "outbox")
    (tmp_path / "outbox").rmdir()
    (tmp_path / "outbox").write_text("not a folder")
    failed = refusal(outbox, message())
    assert failed.permanent is False and "outbox" in failed.reason


def test_outbox_refuses_an_id_that_is_not_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        send(OutboxChannel(tmp_path), message(id="../escape"))


@pytest.mark.parametrize("adapter", ["smtp", "webhook"])
def test_a_provider_that_never_answers_times_out_as_transient(adapter: str) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        channel: Channel = (SmtpChannel(f"smtp://127.0.0.1:{port}", SENDER, timeout=0.3) if adapter == "smtp"
                            else WebhookChannel(f"http://127.0.0.1:{port}/fcm", "fcm", timeout=0.3))
        failed = refusal(channel, message())
    assert failed.permanent is False

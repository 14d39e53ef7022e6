"""Runs the notifier: `attendwise notify` in full mode (any number of
processes), inside `attendwise serve` in embedded mode. Settings choose the
channels (SMTP or the outbox folder; push and SMS webhooks or the outbox) and
the intake (JetStream's shared durable consumer, or the event log)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import structlog

from adapters.notify_channels import Channel, OutboxChannel, SmtpChannel, WebhookChannel
from adapters.notify_intake import EventIntake, JetStreamIntake, LogIntake
from api.bootstrap import Container
from api.jobs import repeat
from api.settings import Settings
from commands.notifier import CAUSES, Notifier, NotifierConfig

log = structlog.get_logger("notifier")


def channels(settings: Settings) -> dict[str, Channel]:
    outbox = OutboxChannel(settings.data_dir / "outbox")
    return {
        "email": SmtpChannel(settings.smtp_url, settings.mail_from) if settings.smtp_url else outbox,
        "push": (WebhookChannel(settings.push_webhook_url, "fcm", settings.webhook_secret)
                 if settings.push_webhook_url else outbox),
        "sms": (WebhookChannel(settings.sms_webhook_url, "twilio", settings.webhook_secret)
                if settings.sms_webhook_url else outbox),
    }


def build_notifier(c: Container) -> Notifier:
    s = c.settings
    config = NotifierConfig(base_url=s.base_url, max_attempts=s.notify_max_attempts, retry_base=s.notify_retry_base,
                            lease=dt.timedelta(seconds=s.notify_lease))
    return Notifier(c.app, c.readmodels, channels(s), config, clock=c.clock)


def intake(c: Container) -> EventIntake:
    s = c.settings
    if s.nats_url:
        return JetStreamIntake(s.nats_url, s.nats_namespace, durable="notifier", ack_wait=s.notify_ack_wait)
    return LogIntake(c.event_log, c.readmodels, name="notifier")


async def run_notifier(c: Container, stop: asyncio.Event) -> None:
    notifier = build_notifier(c)
    feed = intake(c)
    s = c.settings
    c.projectors["notifications"].install()
    log.info("notifier_started", worker=notifier.config.worker, intake=type(feed).__name__,
             channels={k: ch.name for k, ch in notifier.channels.items()})
    try:
        await asyncio.gather(
            repeat("notifier intake", stop, lambda: feed.run(notifier.on_event, stop, CAUSES.__contains__)),
            repeat("notifier sweep", stop, notifier.sweep, every=s.notify_sweep_every),
            repeat("notifier reminders", stop, notifier.remind, every=s.notify_reminders_every),
        )
    finally:
        await notifier.close()
        log.info("notifier_stopped", sent=notifier.sent)

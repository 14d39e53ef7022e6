"""Notification commands: a person's preferences, unsubscribing by link,
queueing a notification once, recording each delivery attempt, and an
operator's retry of a dead letter. The notifier (`commands/notifier.py`)
drives these; the API exposes the preferences."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from domain.errors import ConcurrencyConflict, InvalidInput
from domain.notifications import (
    Notification, NotificationPreferences, check_channel, check_kind, default_preferences, preferences_id,
    retry_delay, send_after,
)
from commands.loading import Loader
from commands.messages import CommandContext

UNSUBSCRIBE_TTL = dt.timedelta(days=365)


@dataclass(frozen=True)
class Intent:
    """Tell `recipient_id` about `kind`, because of `source` (an event id or a
    reminder), with what the message shows."""

    kind: str
    recipient_id: str
    source: str
    context: dict[str, Any]
    expires: dt.datetime | None = None  # no use after this (a reminder: the session's start)


@dataclass(frozen=True)
class PreferenceChanges:
    channels: dict[str, dict[str, bool]] | None = None  # kind -> channel -> on
    quiet_hours: tuple[str | None, str | None] | None = None  # (None, None) clears them
    reminders: list[int] | None = None
    locale: str | None = None
    push_token: str | None = None  # "" clears it
    phone: str | None = None


class NotificationHandlers(Loader):
    tokens: Any  # TokenService

    # ---- preferences
    def notification_preferences(self, user_id: str) -> NotificationPreferences:
        found = self._find(preferences_id(user_id), NotificationPreferences)
        return found if found is not None else default_preferences(user_id)

    def change_notification_preferences(self, ctx: CommandContext, changes: PreferenceChanges) -> NotificationPreferences:
        if ctx.user_id is None:
            raise InvalidInput("sign in to change notification preferences")
        user_id = str(ctx.user_id)

        def work() -> tuple[NotificationPreferences, list[Any]]:
            prefs = self.notification_preferences(user_id)
            for kind, channels in (changes.channels or {}).items():
                for channel, on in channels.items():
                    prefs.switch(kind, channel, bool(on))
            if changes.quiet_hours is not None:
                prefs.set_quiet_hours(*changes.quiet_hours)
            if changes.reminders is not None:
                prefs.set_reminders(changes.reminders)
            if changes.locale is not None:
                prefs.set_locale(changes.locale)
            if changes.push_token is not None:
                prefs.set_address("push", changes.push_token)
            if changes.phone is not None:
                prefs.set_address("sms", changes.phone)
            return prefs, [prefs]

        return self._save_retrying(ctx, work)

    def unsubscribe_link_token(self, user_id: str, kind: str, channel: str) -> str:
        token, _ = self.tokens.issue(user_id, "unsubscribe", UNSUBSCRIBE_TTL, scope=f"{kind}:{channel}")
        return token

    def unsubscribe(self, token: str) -> tuple[str, str]:
        """Turn one kind off on one channel, from a signed link (no login).
        Returns (kind, channel); a second click changes nothing."""
        claims = self.tokens.verify(token, "unsubscribe")
        kind, _, channel = (claims.scope or "").partition(":")
        check_kind(kind), check_channel(channel)
        ctx = CommandContext(actor=f"user:{claims.subject}")

        def work() -> tuple[None, list[Any]]:
            prefs = self.notification_preferences(claims.subject)
            prefs.switch(kind, channel, False, via="unsubscribe link")
            return None, [prefs]

        self._save_retrying(ctx, work)
        return kind, channel

    # ---- notifications
    def queue_notification(self, intent: Intent, channel: str, now: dt.datetime, prefs: NotificationPreferences,
                           time_zone: str, worker: str, lease: dt.timedelta) -> Notification | None:
        """Queue the notification unless it was queued before (its id is
        derived: a redelivered event or a repeated reminder sweep finds it).
        Due now, the first attempt starts in the same commit, so this worker
        sends it. Returns it when this worker should send it now."""
        when = send_after(now, intent.kind, prefs.quiet_hours, time_zone, intent.expires)
        n = Notification(kind=intent.kind, channel=channel, recipient_id=intent.recipient_id, source=intent.source,
                         context=intent.context, send_after=when or now, expires=intent.expires)
        if when is None:
            n.skip("QUIET_HOURS")
        elif when <= now:
            n.start_attempt(worker, now, lease)
        try:
            self.save_stamped(CommandContext.system(worker), n)
        except ConcurrencyConflict:
            return None  # queued before: whoever did that owns it (or the sweep will)
        return n if n.status == "sending" else None

    def claim_notification(self, notification_id: uuid.UUID, now: dt.datetime, worker: str,
                           lease: dt.timedelta) -> Notification | None:
        """Start an attempt on a due notification (retry, end of quiet hours, a
        crashed worker's lease run out). None: not due, or another worker won."""
        n = self._find(notification_id, Notification)
        if n is None or not n.can_start(now):
            return None
        if n.expires is not None and n.expires <= now:
            n.skip("EXPIRED")
            self._save_quietly(worker, n)
            return None
        n.start_attempt(worker, now, lease)
        return n if self._save_quietly(worker, n) else None

    def record_outcome(self, n: Notification, worker: str, *, provider: str = "", provider_id: str = "",
                       error: str | None = None, permanent: bool = False, skip: str | None = None,
                       now: dt.datetime, max_attempts: int, retry_base: float) -> bool:
        if skip is not None:
            n.skip(skip)
        elif error is None:
            n.sent(provider, provider_id)
        else:
            n.failed(error, permanent, now, max_attempts, delay=retry_delay(n.attempts, base=retry_base))
        return self._save_quietly(worker, n)

    def _save_quietly(self, worker: str, n: Notification) -> bool:
        try:
            self.save_stamped(CommandContext.system(worker), n)
            return True
        except ConcurrencyConflict:
            return False  # our lease ran out and another worker took the message over

    def retry_dead_letter(self, notification_id: uuid.UUID, ctx: CommandContext, now: dt.datetime | None = None) -> None:
        n = self._get(notification_id, Notification, "notification")
        n.requeue(ctx.actor, now or dt.datetime.now(dt.timezone.utc))
        self.save_stamped(ctx, n)


"""The notifier: turns events into notifications and delivers them.

Three loops share one `Notifier` (any number of processes may run them):
- `on_event` (fed by an intake: JetStream's shared durable consumer in full
  mode, the event log in embedded mode) decides who is told what, queues each
  notification once (its id is derived from the event) and sends those due now;
- `sweep` sends what became due: retries after a backoff, messages held by
  quiet hours, and messages whose worker died mid-attempt (its lease ran out);
- `remind` queues session reminders from the sessions read model.

Delivery is at least once towards the provider, and never twice from a
redelivered event or a repeated sweep: a resend happens only when a worker
died between the provider's acceptance and recording `Sent`, or could not
record it before its lease ran out (the event store down that long), and it
carries the same Message-ID / Idempotency-Key, so the receiver can tell.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from adapters.errors import ServiceUnavailable
from adapters.notify_channels import Channel, DeliveryFailed, Message
from adapters.readmodels import ReadModelStore
from adapters.rendering import render
from projections.notifications import stamp
from commands.notifications import Intent
from domain.attendance import CheckIn, Roster
from domain.communities import Community
from domain.envelope import EventEnvelope
from domain.notifications import Notification, due_reminder, is_transactional, notification_id, reminder_source
from domain.scheduling import Session
from domain.social import Comment, Post
from domain.users import User

log = structlog.get_logger("notifier")

# the events `plan` turns into notifications (the intake acknowledges the rest unread)
CAUSES = frozenset({"UserRegistered", "UserPasswordResetRequested", "CheckInSucceeded", "CheckInFailed",
                    "SessionChanged", "SessionCancelled", "RosterPromoted", "MembershipApproved", "CommentWritten"})
RECORD_RETRY = 0.5  # seconds between tries to record an outcome while the event store is down
STALE_AFTER = dt.timedelta(hours=6)  # an event older than this is history, not news (a new notifier's first run)


@dataclass
class NotifierConfig:
    base_url: str = "http://127.0.0.1:8000"
    max_attempts: int = 5
    retry_base: float = 2.0  # seconds; doubles per attempt, with jitter
    lease: dt.timedelta = dt.timedelta(seconds=60)  # an attempt's owner; after it, another worker may resend
    concurrency: int = 16
    worker: str = field(default_factory=lambda: f"notifier:{socket.gethostname()}:{os.getpid()}")


def _place(location: dict[str, Any] | None) -> str | None:
    if not location:
        return None
    parts = [str(location[k]) for k in ("name", "address") if location.get(k)]
    return ", ".join(parts) or None


def _excerpt(text: Any, limit: int = 140) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Notifier:
    def __init__(self, app: Any, readmodels: ReadModelStore, channels: dict[str, Channel],
                 config: NotifierConfig | None = None, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.app, self.readmodels, self.channels = app, readmodels, channels
        self.config = config or NotifierConfig()
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self.sent = 0

    # ------------------------------------------------------------ who is told what
    def _find(self, aggregate_id: str, kind: type) -> Any:
        try:
            return self.app._find(uuid.UUID(aggregate_id), kind)
        except (ValueError, TypeError):  # a forged ticket names nobody
            return None

    def _session_facts(self, session: Session) -> dict[str, Any]:
        return {"session_id": str(session.id), "session_title": session.title,
                "session_start": session.start.isoformat(), "location": _place(session.location)}

    def _roster(self, session_id: str) -> list[str]:
        roster = self.app._find(Roster.create_id(session_id), Roster)
        return [] if roster is None else roster.confirmed + roster.waiting

    def plan(self, env: EventEnvelope) -> list[Intent]:
        """The notifications an event causes (none for most events)."""
        d, source = env.data, env.event_id
        if env.event_type not in CAUSES:
            return []
        match env.event_type:
            case "UserRegistered":
                return [Intent("email_verification", env.aggregate_id, source, {})]
            case "UserPasswordResetRequested":
                return [Intent("password_reset", env.aggregate_id, source, {})]
            case "CheckInSucceeded" | "CheckInFailed":
                checkin = self._find(env.aggregate_id, CheckIn)
                session = self._find(checkin.session_id, Session) if checkin else None
                if checkin is None or session is None or checkin.direction != "in":
                    return []
                kind = "checkin_succeeded" if env.event_type == "CheckInSucceeded" else "checkin_failed"
                return [Intent(kind, checkin.user_id, source, {
                    **self._session_facts(session), "scanned_at": checkin.scanned_at.isoformat(),
                    "gate": checkin.gate, "reason": d.get("reason", "")})]
            case "SessionChanged" | "SessionCancelled":
                session = self._find(env.aggregate_id, Session)
                if session is None:
                    return []
                facts = self._session_facts(session)
                if env.event_type == "SessionCancelled":
                    kind, facts = "session_cancelled", {**facts, "reason": d.get("reason", "")}
                else:
                    before = self.app.repository.get(session.id, version=env.aggregate_version - 1)
                    if before.start == session.start and before.location == session.location:
                        return []  # only the capacity changed: nothing a member needs to know
                    kind = "session_changed"
                    facts = {**facts, "previous_start": before.start.isoformat() if before.start != session.start
                             else None}
                return [Intent(kind, user, source, facts) for user in self._roster(str(session.id))]
            case "RosterPromoted":
                session = self._find(d["session_id"], Session)
                return [] if session is None else [Intent("waitlist_promoted", d["user_id"], source,
                                                          self._session_facts(session))]
            case "MembershipApproved":
                community = self._find(d["community_id"], Community)
                return [] if community is None else [Intent("join_approved", d["user_id"], source,
                                                            {"community_name": community.name,
                                                             "community_id": d["community_id"]})]
            case "CommentWritten":
                post = self._find(d["post_id"], Post)
                if post is None or post.author_id == d["author_id"]:
                    return []
                replier = self._find(d["author_id"], User)
                return [Intent("reply_to_post", post.author_id, source, {
                    "replier_name": replier.display_name if replier else "someone",
                    "comment_excerpt": _excerpt(d.get("text")), "post_excerpt": _excerpt(post.text, 80),
                    "post_id": d["post_id"], "comment_id": env.aggregate_id})]
        return []

    # ------------------------------------------------------------ queueing
    def _queue(self, intents: list[Intent], now: dt.datetime) -> list[Notification]:
        """Queue each intent on the recipient's channels; return those this
        worker should send now."""
        out = []
        for intent in intents:
            user = self._find(intent.recipient_id, User)
            if user is None or user.deleted:
                continue
            prefs = self.app.notification_preferences(intent.recipient_id)
            for channel in prefs.channels_for(intent.kind):
                n = self.app.queue_notification(intent, channel, now, prefs, user.time_zone, self.config.worker,
                                                self.config.lease)
                if n is not None:
                    out.append(n)
        return out

    def queue_event(self, env: EventEnvelope) -> list[Notification]:
        now = self.clock()
        if dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(env.timestamp) > STALE_AFTER:
            return []
        intents = self.plan(env)
        return self._queue(intents, now) if intents else []

    async def on_event(self, env: EventEnvelope) -> int:
        """The intake's handler: returns once every notification the event
        causes is queued (and those due, attempted). Safe to call twice."""
        due = await asyncio.to_thread(self.queue_event, env)
        await asyncio.gather(*(self.deliver(n) for n in due))
        return len(due)

    # ------------------------------------------------------------ delivering
    def _message(self, n: Notification) -> Message | str:
        """The message to send, or why it is not sent (a skip reason)."""
        user = self._find(n.recipient_id, User)
        if user is None or user.deleted:
            return "RECIPIENT_GONE"
        prefs = self.app.notification_preferences(n.recipient_id)
        transactional = is_transactional(n.kind)
        if not transactional and not prefs.wants(n.kind, n.channel):
            return "SWITCHED_OFF"  # unsubscribed after it was queued
        to = user.email if n.channel == "email" else prefs.addresses.get(n.channel)
        if not to:
            return "NO_ADDRESS"
        base = self.config.base_url
        context = {**n.context, "display_name": user.display_name, "app_url": base, "unsubscribe_url": None}
        if n.kind == "email_verification":
            token = self.app.email_verification_token(user)
            if token is None:
                return "ALREADY_VERIFIED"
            context["link"] = f"{base}/auth/verify-email?token={token}"
        elif n.kind == "password_reset":
            context["link"] = f"{base}/auth/reset-password?token={self.app.password_reset_token(user)}"
        elif n.channel == "email":
            token = self.app.unsubscribe_link_token(n.recipient_id, n.kind, n.channel)
            context["unsubscribe_url"] = f"{base}/notifications/unsubscribe?token={token}"
        r = render(n.kind, n.channel, context, locale=prefs.locale, time_zone=user.time_zone)
        data = {"kind": n.kind, "notification_id": str(n.id)}
        data |= {k: str(v) for k, v in n.context.items() if k.endswith("_id") and v}
        return Message(id=str(n.id), channel=n.channel, to=to, subject=r.subject, text=r.text, html=r.html,
                       unsubscribe_url=context["unsubscribe_url"], data=data)

    async def deliver(self, n: Notification) -> str:
        """One attempt on a notification this worker holds the lease of."""
        async with self._slots:
            cfg = self.config
            message = await asyncio.to_thread(self._message, n)
            outcome: dict[str, Any] = {}
            channel = self.channels[n.channel]
            if isinstance(message, str):
                outcome, status = {"skip": message}, "skipped"
            else:
                try:
                    outcome = {"provider": channel.name, "provider_id": await channel.send(message)}
                    status = "sent"
                except DeliveryFailed as e:
                    outcome, status = {"error": e.reason, "permanent": e.permanent}, "failed"
            saved = await self._record(n, outcome)
            if status == "sent":
                self.sent += 1
            log.info("notification_" + status, notification_id=str(n.id), kind=n.kind, channel=n.channel,
                     attempt=n.attempts, recorded=saved, **({"reason": outcome.get("skip") or outcome.get("error")}
                                                            if status != "sent" else {}))
            return status

    async def _record(self, n: Notification, outcome: dict[str, Any]) -> bool:
        """Record an attempt's outcome. The provider may hold the message
        already, so an event store that is down is waited for while this
        worker's lease lasts; after the lease another worker may take the
        message over and send it again (with the same Message-ID)."""
        cfg = self.config
        while True:
            attempt = copy.deepcopy(n)  # a failed save leaves its aggregate changed but unsaved
            try:
                return await asyncio.to_thread(self.app.record_outcome, attempt, cfg.worker, now=self.clock(),
                                               max_attempts=cfg.max_attempts, retry_base=cfg.retry_base, **outcome)
            except ServiceUnavailable as e:
                if n.lease_until is None or self.clock() + dt.timedelta(seconds=RECORD_RETRY) >= n.lease_until:
                    raise
                log.warning("notification_outcome_waiting", notification_id=str(n.id), service=e.service,
                            lease_until=n.lease_until.isoformat())
                await asyncio.sleep(RECORD_RETRY)

    async def sweep(self, limit: int = 200) -> int:
        """Attempt what is due: retries, ends of quiet hours, lapsed leases."""
        now = self.clock()
        due = stamp(now)
        rows = await asyncio.to_thread(self.readmodels.rows, "notifications", order_by="next_at", limit=limit,
                                       conditions=[("status", "in", ["queued", "retrying"]), ("next_at", "<=", due)])
        rows += await asyncio.to_thread(self.readmodels.rows, "notifications", limit=limit,
                                        conditions=[("status", "=", "sending"), ("lease_until", "<=", due)])

        def claim(row: dict[str, Any]) -> Notification | None:
            return self.app.claim_notification(uuid.UUID(row["id"]), now, self.config.worker, self.config.lease)

        claimed = [n for n in await asyncio.gather(*(asyncio.to_thread(claim, r) for r in rows)) if n is not None]
        await asyncio.gather(*(self.deliver(n) for n in claimed))
        return len(claimed)

    # ------------------------------------------------------------ reminders
    def reminder_intents(self, now: dt.datetime, horizon_minutes: int = 1440) -> list[Intent]:
        """Reminders due now for sessions in the next day, per member's choice
        of reminders; ones already queued (the notifications read model knows
        them) are left out before any write is tried."""
        now = now.replace(microsecond=0)
        sessions = self.readmodels.rows("sessions", where={"status": "scheduled"}, conditions=[
            ("start", ">", now.isoformat()), ("start", "<=", (now + dt.timedelta(minutes=horizon_minutes)).isoformat())])
        intents = []
        for s in sessions:
            start = dt.datetime.fromisoformat(s["start"])
            facts = {"session_id": s["id"], "session_title": s["title"], "session_start": s["start"],
                     "location": _place(s["location"])}
            for place in self.readmodels.rows("places", where={"session_id": s["id"], "status": "confirmed"}):
                user = place["user_id"]
                prefs = self.app.notification_preferences(user)
                minutes = due_reminder(start, now, prefs.reminders)
                if minutes is None:
                    continue
                source = reminder_source(s["id"], s["start"], minutes)
                channels = prefs.channels_for("session_reminder")
                if all(self.readmodels.get("notifications", str(notification_id(source, "session_reminder", c, user)))
                       for c in channels):
                    continue
                intents.append(Intent("session_reminder", user, source, {**facts, "minutes_before": minutes},
                                      expires=start))
        return intents

    async def remind(self) -> int:
        now = self.clock()
        due = await asyncio.to_thread(lambda: self._queue(self.reminder_intents(now), now))
        await asyncio.gather(*(self.deliver(n) for n in due))
        return len(due)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

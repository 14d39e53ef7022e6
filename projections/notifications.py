"""The `notifications` read model: each notification's delivery state. The
notifier's sweep reads what is due from it; `attendwise notifications
dead-letters` lists the ones that gave up; people see their own in GraphQL."""

from __future__ import annotations

import datetime as dt

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope

NOTIFICATIONS = Table("notifications", columns=(
    ("id", "text"), ("user_id", "text"), ("kind", "text"), ("channel", "text"), ("source", "text"),
    ("status", "text"),  # queued, sending, retrying, sent, dead, skipped
    ("attempts", "int"),
    ("next_at", "text"),  # when it is due (queued, retrying): a sortable UTC stamp
    ("lease_until", "text"),  # while sending: when another worker may take it over
    ("last_error", "text"), ("skip_reason", "text"), ("provider_id", "text"),
    ("queued_at", "text"), ("sent_at", "text"), ("updated_at", "text"),
    ("sort_key", "text"),  # queued_at | id
), indexes=("status", "user_id", "next_at"))


def stamp(value: dt.datetime | str) -> str:
    """A UTC time as a fixed-width string, so stamps compare as text."""
    t = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NotificationsProjection:
    name = "notifications"
    tables = (NOTIFICATIONS,)
    event_types = frozenset({"NotificationQueued", "NotificationAttemptStarted", "NotificationSent",
                             "NotificationAttemptFailed", "NotificationGaveUp", "NotificationRequeued",
                             "NotificationSkipped"})

    def apply(self, event: EventEnvelope, tx: ReadModelTx) -> None:
        d, nid, at = event.data, event.aggregate_id, stamp(event.timestamp)
        match event.event_type:
            case "NotificationQueued":
                tx.upsert("notifications", {
                    "id": nid, "user_id": d["recipient_id"], "kind": d["kind"], "channel": d["channel"],
                    "source": d["source"], "status": "queued", "attempts": 0, "next_at": stamp(d["send_after"]),
                    "lease_until": None, "last_error": None, "skip_reason": None, "provider_id": None,
                    "queued_at": at, "sent_at": None, "updated_at": at, "sort_key": f"{at}|{nid}"})
            case "NotificationAttemptStarted":
                tx.patch("notifications", nid, {"status": "sending", "attempts": d["attempt"],
                                                "lease_until": stamp(d["lease_until"]), "updated_at": at})
            case "NotificationSent":
                tx.patch("notifications", nid, {"status": "sent", "provider_id": d["provider_id"], "sent_at": at,
                                                "lease_until": None, "updated_at": at})
            case "NotificationAttemptFailed":
                tx.patch("notifications", nid, {"status": "retrying", "last_error": d["error"],
                                                "next_at": stamp(d["retry_at"]), "lease_until": None,
                                                "updated_at": at})
            case "NotificationGaveUp":
                tx.patch("notifications", nid, {"status": "dead", "last_error": d["error"], "lease_until": None,
                                                "updated_at": at})
            case "NotificationRequeued":
                tx.patch("notifications", nid, {"status": "queued", "attempts": 0, "next_at": stamp(d["at"]),
                                                "updated_at": at})
            case "NotificationSkipped":
                tx.patch("notifications", nid, {"status": "skipped", "skip_reason": d["reason"],
                                                "lease_until": None, "updated_at": at})

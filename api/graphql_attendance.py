"""GraphQL for attendance: who has a place and who is here, check-in attempts
(a member's own; every one of a session, for its hosts), the counters, and
the live dashboard as a subscription (`sessionLive`, fed by `api/live.py`).
Reads the tables of `projections/attendance.py`; counts are its columns."""

from __future__ import annotations

import asyncio
from typing import Any

from aiodataloader import DataLoader
from ariadne import EnumType, ObjectType, QueryType, SubscriptionType
from starlette.websockets import WebSocket

from adapters.readmodels import ReadModelStore
from api.graphql_support import (after_conditions, connection, cursor_key, is_uuid, page_size, principal_of,
                                 signed_in_person, user_node)
from domain.authorization import check_is_host, check_signed_in
from domain.errors import InvalidInput, NotFound
from projections.attendance import dashboard_stats

OUTCOMES = {"PENDING": "pending", "SUCCEEDED": "succeeded", "FAILED": "failed", "CONFLICT": "conflict",
            "ANNULLED": "annulled"}


def hosted_session(rm: ReadModelStore, who: Any, session_id: str) -> dict[str, Any]:
    """The session's row, if the caller hosts it (or is a platform admin);
    else `NotSignedIn`, `NotFound` or `Forbidden`."""
    check_signed_in(who.user_id if who else None, who.roles if who else ())
    session = rm.get("sessions", session_id) if is_uuid(session_id) else None
    if session is None:
        raise NotFound("no such session")
    check_is_host(who.user_id, who.roles, session["host_ids"])
    return session


def gate_counts(by_gate: dict[str, int]) -> list[dict[str, Any]]:
    return [{"gate": g, "inside": n} for g, n in sorted(by_gate.items())]


def checkin_node(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "sessionId": row["session_id"], "userId": row["user_id"], "ticketId": row["ticket_id"],
            "deviceId": row["device_id"], "gate": row["gate"], "direction": row["direction"],
            "policy": row["policy"], "scannedAt": row["scanned_at"], "receivedAt": row["received_at"],
            "offline": bool(row["offline"]), "outcome": row["outcome"], "reason": row["reason"],
            "confidence": row["confidence"], "distance": row["distance"], "threshold": row["threshold"],
            "model": row["model"], "modelVersion": row["model_version"], "decidedAt": row["decided_at"],
            "conflictsWith": row["other_checkin_id"], "annulledBy": row["annulled_by"],
            "annulReason": row["annul_reason"]}


def live_node(message: dict[str, Any]) -> dict[str, Any]:
    """A dashboard message (`api/live.py`) as a GraphQL `LiveMessage`."""
    s = message["stats"]
    return {"type": message["type"], "seq": message["seq"], "kind": message.get("kind"),
            "userId": message.get("user_id"), "checkInId": message.get("checkin_id"), "gate": message.get("gate"),
            "direction": message.get("direction"), "reason": message.get("reason"), "by": message.get("by"),
            "at": message.get("at"),
            "stats": {"expected": s["expected"], "checkedIn": s["checked_in"], "failed": s["failed"],
                      "pending": s["pending"], "conflicts": s["conflicts"], "inside": s["inside"],
                      "insideByGate": gate_counts(s["inside_by_gate"]), "ratePerMinute": s["rate_per_minute"]}}


def bind(query: QueryType, container: Any) -> list[Any]:
    """Adds the attendance queries to `query`; returns the other bindables
    (the `Subscription` type among them) for `make_executable_schema`."""
    rm: ReadModelStore = container.readmodels
    attendee_type = ObjectType("Attendee")
    subscription = SubscriptionType()

    def caller(info: Any) -> Any:
        """The signed-in caller; over a WebSocket also `?access_token=` (browsers cannot set its headers)."""
        who = principal_of(info, container)
        request = info.context["request"]
        token = request.query_params.get("access_token") if isinstance(request, WebSocket) else None
        if who is None and token:
            who = info.context["principal"] = container.app.principal(token)
        return who

    @query.field("sessionAttendance")
    def resolve_attendance(_: Any, info: Any, sessionId: str, first: int = 50,
                           after: str | None = None) -> dict[str, Any]:
        hosted_session(rm, caller(info), sessionId)
        n = page_size(first)
        places = rm.rows("places", where={"session_id": sessionId}, order_by="sort_key", limit=n + 1,
                         conditions=after_conditions(after))
        here = {r["id"]: r for r in rm.rows("presence", conditions=[("id", "in", [p["id"] for p in places[:n]])])}

        def node(place: dict[str, Any]) -> dict[str, Any]:
            p = here.get(place["id"]) or {}
            return {"userId": place["user_id"], "status": place["status"], "since": place["since"],
                    "attended": bool(p.get("attended")), "inside": bool(p.get("inside")), "gate": p.get("gate"),
                    "markedBy": p.get("marked_by"), "markReason": p.get("reason")}
        return connection(places, n, node)

    @query.field("sessionStats")
    def resolve_stats(_: Any, info: Any, sessionId: str) -> dict[str, Any]:
        hosted_session(rm, caller(info), sessionId)
        row = rm.get("session_stats", sessionId)
        s = dashboard_stats(row, container.clock())
        return {"sessionId": sessionId, "seq": row["last_seq"] if row else 0, "expected": s["expected"],
                "checkedIn": s["checked_in"], "pending": s["pending"], "succeeded": row["succeeded"] if row else 0,
                "failed": s["failed"], "conflicts": s["conflicts"], "annulled": row["annulled"] if row else 0,
                "inside": s["inside"], "insideByGate": gate_counts(s["inside_by_gate"]),
                "ratePerMinute": s["rate_per_minute"]}

    def newest_first(where: dict[str, Any], first: int, after: str | None) -> dict[str, Any]:
        n = page_size(first)
        rows = rm.rows("checkins", where=where, order_by="sort_key DESC", limit=n + 1,
                       conditions=[("sort_key", "<", cursor_key(after))] if after else [])
        return connection(rows, n, checkin_node)

    @query.field("myCheckIns")
    def resolve_my_checkins(_: Any, info: Any, first: int = 20, after: str | None = None) -> dict[str, Any]:
        who = signed_in_person(info, container)
        return newest_first({"user_id": str(who.user_id)}, first, after)

    @query.field("checkIns")
    def resolve_checkins(_: Any, info: Any, sessionId: str, first: int = 50, after: str | None = None,
                         outcome: str | None = None) -> dict[str, Any]:
        hosted_session(rm, caller(info), sessionId)
        return newest_first({"session_id": sessionId, **({"outcome": outcome} if outcome else {})}, first, after)

    @attendee_type.field("user")
    async def resolve_attendee_user(attendee: dict[str, Any], info: Any) -> dict[str, Any] | None:
        async def batch(ids: list[str]) -> list[dict[str, Any] | None]:
            rows = await asyncio.to_thread(rm.rows, "users", None, None, None, [("id", "in", ids)])
            found = {r["id"]: user_node(r) for r in rows}
            return [found.get(i) for i in ids]
        return await info.context.setdefault("attendee_users", DataLoader(batch)).load(attendee["userId"])

    @subscription.source("sessionLive")
    async def live_source(_: Any, info: Any, sessionId: str, after: int | None = None) -> Any:
        await asyncio.to_thread(hosted_session, rm, caller(info), sessionId)
        if after is not None and after < 0:
            raise InvalidInput("after is a seq this feed sent", field="after")
        return info.context["request"].app.state.live.messages(sessionId, after)

    @subscription.field("sessionLive")
    def resolve_live(message: dict[str, Any], info: Any, **_: Any) -> dict[str, Any]:
        return live_node(message)

    return [attendee_type, subscription, EnumType("CheckInOutcome", OUTCOMES)]

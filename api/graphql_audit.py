"""GraphQL for auditors: check-in stories and attendance as of an instant,
from the event store (`commands/audit.py`), never the read models. Each call
reads the whole log, in a worker thread so the event loop keeps serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ariadne import QueryType

from api.graphql_support import cursor_key, cursor_of, page_size, principal_of
from commands.audit import AuditAttendance, AuditCheckIns, audit_attendance, audit_checkins, check_may_audit
from domain.checkin_history import AttendanceAsOf, Story
from domain.errors import InvalidInput


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def story_node(s: Story) -> dict[str, Any]:
    d = s.as_dict()
    node = {_camel(k): v for k, v in d.items() if k not in ("entries", "checkin_id")}
    node["checkInId"] = s.checkin_id
    node["entries"] = [{"position": e["position"], "at": e["at"], "actor": e["actor"], "actorName": e["actor_name"],
                        "event": e["event"], "eventId": e["event_id"], "summary": e["summary"],
                        "details": [{"name": k, "value": json.dumps(v)} for k, v in e["details"].items()]}
                       for e in d["entries"]]
    return node


def attendance_node(a: AttendanceAsOf) -> dict[str, Any]:
    members = [{**{_camel(k): v for k, v in m.as_dict().items() if k != "last_checkin_id"},
                "lastCheckInId": m.last_checkin_id} for m in a.members]
    return {"sessionId": a.session_id, "asOf": a.as_of, "position": a.position, "title": a.title, "start": a.start,
            "cancelled": a.cancelled, "members": members, "counts": dict(a.counts)}


def _position(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(cursor_key(cursor))
    except ValueError as e:
        raise InvalidInput("after is not a cursor from this API", field="after") from e


def bind(query: QueryType, container: Any) -> list[Any]:
    def auditor(info: Any) -> Any:
        who = principal_of(info, container)
        check_may_audit(who.user_id if who else None, who.roles if who else ())
        return who

    @query.field("auditCheckIns")
    async def resolve_audit_checkins(_: Any, info: Any, sessionId: str | None = None, userId: str | None = None,
                                     to: str | None = None, first: int = 20, after: str | None = None,
                                     **kw: Any) -> dict[str, Any]:
        who = auditor(info)
        n, start = page_size(first), _position(after)
        q = AuditCheckIns(sessionId, userId, kw.get("from"), to)
        stories = await asyncio.to_thread(audit_checkins, container.event_log, q, who, start)
        page = stories[:n]
        return {"edges": [{"cursor": cursor_of(str(s.position)), "node": story_node(s)} for s in page],
                "pageInfo": {"hasNextPage": len(stories) > n,
                             "endCursor": cursor_of(str(page[-1].position)) if page else None}}

    @query.field("auditAttendance")
    async def resolve_audit_attendance(_: Any, info: Any, sessionId: str, asOf: str) -> dict[str, Any]:
        who = auditor(info)
        snapshot = await asyncio.to_thread(audit_attendance, container.event_log, AuditAttendance(sessionId, asOf),
                                           who)
        return attendance_node(snapshot)

    return []

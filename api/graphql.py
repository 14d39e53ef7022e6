"""GraphQL (Ariadne, schema-first): resolvers read projections only."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from ariadne import ObjectType, QueryType, make_executable_schema
from ariadne.asgi import GraphQL
from graphql import GraphQLError

from adapters.errors import ServiceUnavailable
from api.bootstrap import Container
from domain.errors import DomainError, InvalidInput

SCHEMA = (Path(__file__).parent / "schema.graphql").read_text()


def _user(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "displayName": row["display_name"], "timeZone": row["time_zone"],
            "registeredAt": row["registered_at"]}


MAX_PAGE = 100


def _session(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "seriesId": row["series_id"], "title": row["title"], "start": row["start"],
            "end": row["end_"], "timeZone": row["time_zone"], "localStart": row["local_start"],
            "originalStart": row["original_start"], "status": row["status"], "cancelReason": row["cancel_reason"],
            "capacity": row["capacity"], "location": row["location"], "communityId": row["community_id"],
            "hostIds": row["host_ids"], "visibility": row["visibility"]}


def _series(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "title": row["title"], "description": row["description"], "rule": row["rule"],
            "timeZone": row["time_zone"], "start": row["start"], "durationMinutes": row["duration_minutes"],
            "openEnded": bool(row["open_ended"]), "communityId": row["community_id"], "hostIds": row["host_ids"],
            "visibility": row["visibility"], "continuedBy": row["continued_by"]}


def _cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode()


def _after(cursor: str | None) -> list[tuple[str, str, Any]]:
    if not cursor:
        return []
    try:
        return [("sort_key", ">", base64.urlsafe_b64decode(cursor.encode()).decode())]
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput("after is not a cursor from this API", field="after") from e


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


def _connection(rows: list[dict[str, Any]], first: int, to_node: Any) -> dict[str, Any]:
    page = rows[:first]
    return {"edges": [{"cursor": _cursor(r["sort_key"]), "node": to_node(r)} for r in page],
            "pageInfo": {"hasNextPage": len(rows) > first,
                         "endCursor": _cursor(page[-1]["sort_key"]) if page else None}}


def _instant(value: str, field: str) -> str:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise InvalidInput(f"{field} is not an ISO 8601 instant", field=field) from e
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field} needs an offset (e.g. Z or +01:00)", field=field)
    return parsed.astimezone(dt.timezone.utc).isoformat()


def format_error(error: GraphQLError, debug: bool = False) -> dict[str, Any]:
    """Every error carries a stable `code`; internals never leak."""
    formatted = error.formatted
    original = error.original_error
    if isinstance(original, DomainError):
        code = original.code
    elif isinstance(original, ServiceUnavailable):
        code, formatted["message"] = "SERVICE_UNAVAILABLE", str(original)
    elif original is not None:
        code, formatted["message"] = "INTERNAL", "internal error"
    else:
        code = "GRAPHQL_VALIDATION_FAILED"
    formatted["extensions"] = {"code": code}
    return formatted


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def graphql_app(container: Container) -> GraphQL:
    query = QueryType()

    @query.field("user")
    def resolve_user(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        return _user(container.readmodels.get("users", id)) if _is_uuid(id) else None

    series_type = ObjectType("Series")

    @query.field("series")
    def resolve_series(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        return _series(container.readmodels.get("series", id)) if _is_uuid(id) else None

    @series_type.field("sessions")
    def resolve_series_sessions(series: dict[str, Any], info: Any, first: int = 50,
                                after: str | None = None) -> dict[str, Any]:
        n = _page_size(first)
        rows = container.readmodels.rows("sessions", where={"series_id": series["id"]}, order_by="sort_key",
                                         limit=n + 1, conditions=_after(after))
        return _connection(rows, n, _session)

    @query.field("session")
    def resolve_session(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        row = container.readmodels.get("sessions", id) if _is_uuid(id) else None
        return _session(row) if row else None

    @query.field("communitySessions")
    def resolve_community_sessions(_: Any, info: Any, communityId: str, to: str, first: int = 50,
                                   after: str | None = None, **kw: Any) -> dict[str, Any]:
        n = _page_size(first)
        frm, until = _instant(kw["from"], "from"), _instant(to, "to")
        rows = container.readmodels.rows(
            "sessions", where={"community_id": communityId, "visibility": "public"}, order_by="sort_key",
            limit=n + 1, conditions=[("start", ">=", frm), ("start", "<", until), *_after(after)])
        return _connection(rows, n, _session)

    @query.field("upcomingSessions")
    def resolve_upcoming(_: Any, info: Any, userId: str, first: int = 20, after: str | None = None) -> dict[str, Any]:
        n = _page_size(first)
        now = container.clock().isoformat()
        hosted = container.readmodels.rows(
            "session_hosts", where={"user_id": userId, "status": "scheduled"}, order_by="sort_key", limit=n + 1,
            conditions=[("sort_key", ">", now), *_after(after)])
        rows = [r for r in (container.readmodels.get("sessions", h["session_id"]) for h in hosted) if r]
        return _connection(rows, n, _session)

    schema = make_executable_schema(SCHEMA, query, series_type)
    return GraphQL(schema, debug=False, error_formatter=format_error)

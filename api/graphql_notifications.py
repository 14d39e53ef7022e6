"""GraphQL reads of notifications: a person's own delivery history."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from api.graphql_support import connection, cursor_key, page_size, signed_in_person


def _node(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "kind": r["kind"], "channel": r["channel"], "status": r["status"],
            "attempts": r["attempts"], "queuedAt": r["queued_at"], "sentAt": r["sent_at"],
            "skipReason": r["skip_reason"], "lastError": r["last_error"]}


def bind(query: QueryType, container: Any) -> list[Any]:
    @query.field("myNotifications")
    def resolve_my_notifications(_: Any, info: Any, first: int = 20, after: str | None = None) -> dict[str, Any]:
        who = signed_in_person(info, container)
        n = page_size(first)
        rows = container.readmodels.rows("notifications", where={"user_id": str(who.user_id)},
                                         order_by="sort_key DESC", limit=n + 1,
                                         conditions=[("sort_key", "<", cursor_key(after))] if after else [])
        return connection(rows, n, _node)

    return []

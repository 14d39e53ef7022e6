"""What every GraphQL resolver module shares: the caller, paging, rows to
GraphQL objects."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from domain.errors import InvalidInput

MAX_PAGE = 100


def user_node(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "email": row["email"], "displayName": row["display_name"], "timeZone": row["time_zone"],
            "registeredAt": row["registered_at"]}


def cursor_of(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode()


def cursor_key(cursor: str) -> str:
    """The sort key a cursor from this API stands for."""
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput("after is not a cursor from this API", field="after") from e


def after_conditions(cursor: str | None) -> list[tuple[str, str, Any]]:
    return [("sort_key", ">", cursor_key(cursor))] if cursor else []


def page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


def connection(rows: list[dict[str, Any]], first: int, to_node: Any) -> dict[str, Any]:
    page = rows[:first]
    return {"edges": [{"cursor": cursor_of(r["sort_key"]), "node": to_node(r)} for r in page],
            "pageInfo": {"hasNextPage": len(rows) > first,
                         "endCursor": cursor_of(page[-1]["sort_key"]) if page else None}}


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def principal_of(info: Any, container: Any) -> Any:
    """The signed-in caller of this request, or None (checked once per request)."""
    ctx = info.context
    if "principal" not in ctx:
        auth = ctx["request"].headers.get("authorization", "")
        ctx["principal"] = None
        if auth.lower().startswith("bearer "):
            ctx["principal"] = container.app.principal(auth[7:].strip())
    return ctx["principal"]




def signed_in_person(info: Any, container: Any) -> Any:
    """The caller, who must be a signed-in person (`TOKEN_INVALID` otherwise)."""
    from domain.authorization import check_signed_in

    who = principal_of(info, container)
    check_signed_in(who.user_id if who else None, ())
    return who

"""GraphQL (Ariadne, schema-first): resolvers read projections only."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ariadne import QueryType, make_executable_schema
from ariadne.asgi import GraphQL
from graphql import GraphQLError

from adapters.errors import ServiceUnavailable
from api.bootstrap import Container
from domain.errors import DomainError

SCHEMA = (Path(__file__).parent / "schema.graphql").read_text()


def _user(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "displayName": row["display_name"], "timeZone": row["time_zone"],
            "registeredAt": row["registered_at"]}


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


def graphql_app(container: Container) -> GraphQL:
    query = QueryType()

    @query.field("user")
    def resolve_user(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        try:
            uuid.UUID(id)
        except ValueError:
            return None
        return _user(container.readmodels.get("users", id))

    schema = make_executable_schema(SCHEMA, query)
    return GraphQL(schema, debug=False, error_formatter=format_error)

"""GraphQL (Ariadne, schema-first): resolvers read projections only."""

from __future__ import annotations

import asyncio
import inspect
import logging
import datetime as dt
from pathlib import Path
from typing import Any

from aiodataloader import DataLoader
from ariadne import ObjectType, QueryType, make_executable_schema
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLHTTPHandler, GraphQLTransportWSHandler
from ariadne.explorer import ExplorerHttp405
from ariadne.validation.query_cost import CostValidator
from graphql import (DocumentNode, FieldNode, FragmentDefinitionNode, GraphQLError, GraphQLObjectType, GraphQLSchema,
                     GraphQLSyntaxError, InlineFragmentNode, OperationDefinitionNode, ValidationRule, parse)
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from adapters.errors import ServiceUnavailable
from api import graphql_attendance, graphql_audit, graphql_community, graphql_notifications
from api.bootstrap import Container
from api.graphql_support import after_conditions, connection, is_uuid, page_size, principal_of, user_node
from domain.authorization import check_sees_user, check_signed_in
from domain.communities import NotAMember
from domain.errors import DomainError, InvalidInput, NotFound

SCHEMA = "\n".join((Path(__file__).parent / f).read_text()
                   for f in ("schema.graphql", "community.graphql", "attendance.graphql", "notifications.graphql",
                             "audit.graphql"))


# ---------------------------------------------------------------- refusals
# Abusive requests are refused before any resolver runs, each with its own
# code: the shape checks (size, fields, depth) when the query is parsed, before
# graphql-core's validation (some of its rules are quadratic in repeated
# fields); introspection and cost with the validation rules; batches when the
# request is read.
MAX_TOKENS = 4000  # a parsed query's lexical tokens (the body limit bounds the bytes)
MAX_FIELDS = 500  # selected fields, aliases included, with every fragment spread expanded
MAX_DEPTH = 8  # fields nested in fields (fragments are transparent)
MAX_COST = 10_000  # every field costs 1, times the `first` of each list it sits in


def _refusal(code: str, message: str, node: Any = None) -> GraphQLError:
    return GraphQLError(message, node, extensions={"code": code})


def _shape(selections: Any, fragments: dict[str, Any], memo: dict[str, tuple[int, int]],
           visiting: frozenset[str] = frozenset()) -> tuple[int, int]:
    """(fields, depth) of a selection set, each fragment spread counted as
    often as it is spread (billion-laughs fragments count as what they
    expand to; numbers stop growing past the limits)."""
    fields = depth = 0
    for s in selections.selections:
        if isinstance(s, FieldNode):
            f, d = _shape(s.selection_set, fragments, memo, visiting) if s.selection_set else (0, 0)
            fields, depth = fields + 1 + f, max(depth, 1 + d)
        elif isinstance(s, InlineFragmentNode):
            f, d = _shape(s.selection_set, fragments, memo, visiting)
            fields, depth = fields + f, max(depth, d)
        elif s.name.value in fragments and s.name.value not in visiting:  # cycles: validation refuses them
            name = s.name.value
            if name not in memo:
                memo[name] = _shape(fragments[name].selection_set, fragments, memo, visiting | {name})
            f, d = memo[name]
            fields, depth = fields + f, max(depth, d)
    return min(fields, MAX_FIELDS + 1), min(depth, MAX_DEPTH + 1)


def parse_query(_context: Any, data: dict[str, Any]) -> DocumentNode:
    """Ariadne's `query_parser`: parses at most MAX_TOKENS tokens
    (QUERY_TOO_LARGE), then refuses more than MAX_FIELDS fields
    (QUERY_TOO_MANY_FIELDS: alias overloads, fragment bombs) and fields
    nested deeper than MAX_DEPTH (QUERY_TOO_DEEP)."""
    try:
        document = parse(data["query"], max_tokens=MAX_TOKENS)
    except GraphQLSyntaxError as e:
        if "tokens" in e.message and "Parsing aborted" in e.message:
            raise _refusal("QUERY_TOO_LARGE", f"the query has more than {MAX_TOKENS} tokens") from e
        raise
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, tuple[int, int]] = {}
    total = 0
    for op in document.definitions:
        if isinstance(op, OperationDefinitionNode):
            fields, depth = _shape(op.selection_set, fragments, memo)
            if depth > MAX_DEPTH:
                raise _refusal("QUERY_TOO_DEEP", f"the query is nested deeper than {MAX_DEPTH} levels", op)
            total += fields
    if total > MAX_FIELDS:
        raise _refusal("QUERY_TOO_MANY_FIELDS", f"the query selects more than {MAX_FIELDS} fields "
                       "(aliases and fragment spreads included)")
    return document


class NoIntrospection(ValidationRule):
    """INTROSPECTION_DISABLED for `__schema` and `__type` (`__typename` stays)."""

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            self.report_error(_refusal("INTROSPECTION_DISABLED", "introspection is disabled on this server", node))


class _Cost(CostValidator):
    def get_cost_exceeded_error(self) -> GraphQLError:
        return _refusal("QUERY_TOO_COMPLEX", f"the query could return about {self.cost:,} fields; at most "
                        f"{self.maximum_cost:,} are served (ask for smaller pages)")


def cost_map(schema: GraphQLSchema) -> dict[str, dict[str, Any]]:
    """Every field of every object type costs 1, multiplied by the `first`
    (default included) of each paged field above it and of its own."""
    return {name: {field: {"complexity": 1, **({"multipliers": ["first"]} if "first" in f.args else {})}
                   for field, f in t.fields.items()}
            for name, t in schema.type_map.items() if isinstance(t, GraphQLObjectType) and not name.startswith("__")}


def validation_rules(schema: GraphQLSchema, introspection: bool) -> Any:
    costs = cost_map(schema)

    def rules(_context: Any, _document: Any, data: Any) -> list[type[ValidationRule]]:
        variables = (data or {}).get("variables") if isinstance(data, dict) else None

        class Cost(_Cost):
            def __init__(self, context: Any) -> None:
                super().__init__(context, maximum_cost=MAX_COST, default_cost=1, variables=variables,
                                 cost_map=costs)

        return [Cost] if introspection else [Cost, NoIntrospection]

    return rules


def off_the_event_loop(resolver: Any, obj: Any, info: Any, **args: Any) -> Any:
    """Middleware, where reads go over the network: our synchronous resolvers
    read PostgreSQL, Neo4j or S3 and run in the thread pool FastAPI's own
    endpoints use. On the event loop, one read waiting on a service that is
    down (seconds) held up every request the API was serving. Async
    resolvers and the default ones (a key of a dict) stay where they are.
    (Embedded, on local SQLite files, they stay on the loop: see
    docs/ARCHITECTURE.md.)"""
    if getattr(resolver, "__module__", "").startswith("api.") and not inspect.iscoroutinefunction(resolver):
        return run_in_threadpool(resolver, obj, info, **args)
    return resolver(obj, info, **args)


class SingleOperations(GraphQLHTTPHandler):
    """One operation per request: a JSON array (a batch) is refused with
    BATCH_NOT_SUPPORTED before anything in it is parsed."""

    async def execute_graphql_query(self, request: Any, data: Any, **kw: Any) -> Any:
        if isinstance(data, list):
            refused = _refusal("BATCH_NOT_SUPPORTED", "send one operation per request, not a list")
            return False, {"errors": [format_error(refused)]}
        return await super().execute_graphql_query(request, data, **kw)

    async def create_json_response(self, request: Any, result: dict, success: bool) -> Any:
        """Nothing answered because a service is down: 503 with Retry-After,
        as the command API answers (Ariadne would say 400, a bad request)."""
        errors = result.get("errors") or []
        if result.get("data") is None and errors and all(
                (e.get("extensions") or {}).get("code") == "SERVICE_UNAVAILABLE" for e in errors):
            return JSONResponse(result, status_code=503, headers={"Retry-After": str(ServiceUnavailable.RETRY_AFTER)})
        return await super().create_json_response(request, result, success)


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
    elif (error.extensions or {}).get("code"):
        code = error.extensions["code"]
    elif isinstance(original, ServiceUnavailable):
        code, formatted["message"] = "SERVICE_UNAVAILABLE", str(original)
    elif original is not None:
        code, formatted["message"] = "INTERNAL", "internal error"
    else:
        code = "GRAPHQL_VALIDATION_FAILED"
    formatted["extensions"] = {"code": code}
    return formatted


class _ExpectedErrors(logging.Filter):
    """Refusals with a code (a domain error) are answers, not faults: only
    unexpected errors reach the log, with their stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        original = getattr(exc, "original_error", None)
        return not isinstance(original, DomainError) and not (exc is not None and original is None)


GRAPHQL_LOGGER = logging.getLogger("attendwise.graphql")
GRAPHQL_LOGGER.addFilter(_ExpectedErrors())


def graphql_app(container: Container, introspection: bool = True) -> GraphQL:
    query = QueryType()
    user_type = ObjectType("User")
    session_type = ObjectType("Session")

    @query.field("me")
    def resolve_me(_: Any, info: Any) -> dict[str, Any]:
        who = principal_of(info, container)
        check_signed_in(who.user_id if who else None, who.roles if who else ())
        row = container.readmodels.get("users", str(who.user_id))
        if row is None:
            raise NotFound("your account is not in the read model yet; retry in a moment")
        return user_node(row)  # type: ignore[return-value]

    @user_type.field("email")
    def resolve_email(user: dict[str, Any], info: Any) -> str | None:
        who = principal_of(info, container)
        check_sees_user(who.user_id if who else None, who.roles if who else (), user["id"])
        return user["email"]

    @session_type.field("series")
    async def resolve_session_series(session: dict[str, Any], info: Any) -> dict[str, Any] | None:
        loader = info.context.setdefault("series_loader", DataLoader(_load_series))
        return await loader.load(session["seriesId"])

    async def _load_series(ids: list[str]) -> list[dict[str, Any] | None]:
        rows = await asyncio.to_thread(container.readmodels.rows, "series", None, None, None, [("id", "in", ids)])
        by_id = {r["id"]: _series(r) for r in rows}
        return [by_id.get(i) for i in ids]

    @query.field("user")
    def resolve_user(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        return user_node(container.readmodels.get("users", id)) if is_uuid(id) else None

    series_type = ObjectType("Series")

    @query.field("series")
    def resolve_series(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        return _series(container.readmodels.get("series", id)) if is_uuid(id) else None

    @series_type.field("sessions")
    def resolve_series_sessions(series: dict[str, Any], info: Any, first: int = 50,
                                after: str | None = None) -> dict[str, Any]:
        n = page_size(first)
        rows = container.readmodels.rows("sessions", where={"series_id": series["id"]}, order_by="sort_key",
                                         limit=n + 1, conditions=after_conditions(after))
        return connection(rows, n, _session)

    @query.field("session")
    def resolve_session(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        row = container.readmodels.get("sessions", id) if is_uuid(id) else None
        return _session(row) if row else None

    @query.field("communitySessions")
    def resolve_community_sessions(_: Any, info: Any, communityId: str, to: str, first: int = 50,
                                   after: str | None = None, **kw: Any) -> dict[str, Any]:
        n = page_size(first)
        community = container.readmodels.get("communities", communityId) if is_uuid(communityId) else None
        if community is not None and community["visibility"] != "public":
            who = principal_of(info, container)
            standing = container.readmodels.get("members", f"{communityId}:{who.user_id}") if who else None
            if not (standing and standing["status"] == "member"):
                raise NotAMember("this community is private: join it to see its sessions")
        frm, until = _instant(kw["from"], "from"), _instant(to, "to")
        rows = container.readmodels.rows(
            "sessions", where={"community_id": communityId, "visibility": "public"}, order_by="sort_key",
            limit=n + 1, conditions=[("start", ">=", frm), ("start", "<", until), *after_conditions(after)])
        return connection(rows, n, _session)

    @query.field("upcomingSessions")
    def resolve_upcoming(_: Any, info: Any, userId: str, first: int = 20, after: str | None = None,
                         **kw: Any) -> dict[str, Any]:
        who = principal_of(info, container)
        check_sees_user(who.user_id if who else None, who.roles if who else (), userId)
        n = page_size(first)
        since = _instant(kw["from"], "from") if kw.get("from") else container.clock().isoformat()
        hosted = container.readmodels.rows(
            "session_hosts", where={"user_id": userId, "status": "scheduled"}, order_by="sort_key", limit=n + 1,
            conditions=[("sort_key", ">=", since), *after_conditions(after)])
        found = {r["id"]: r for r in container.readmodels.rows(
            "sessions", conditions=[("id", "in", [h["session_id"] for h in hosted])])}
        rows = [found[h["session_id"]] for h in hosted if h["session_id"] in found]
        return connection(rows, n, _session)

    community_types = graphql_community.bind(query, user_type, container)
    schema = make_executable_schema(SCHEMA, query, series_type, user_type, session_type, *community_types,
                                    *graphql_attendance.bind(query, container),
                                    *graphql_notifications.bind(query, container),
                                    *graphql_audit.bind(query, container))
    networked = bool(container.settings.database_url or container.settings.neo4j_uri)
    # introspection is refused by our own rule (with its code); ariadne's flag stays on, the explorer follows
    return GraphQL(schema, debug=False, error_formatter=format_error, introspection=True,
                   explorer=None if introspection else ExplorerHttp405(),
                   http_handler=SingleOperations(middleware=[off_the_event_loop] if networked else None),
                   websocket_handler=GraphQLTransportWSHandler(),  # stops a subscription cleanly on disconnect
                   logger=GRAPHQL_LOGGER.name, query_parser=parse_query,
                   validation_rules=validation_rules(schema, introspection))

"""GraphQL resolvers for communities, posts, comments, the feed and
suggestions. Counts are columns of the read models; authors, communities and
"do I like it" are batched per request (DataLoader); the feed and
suggestions come from the feed graph."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from aiodataloader import DataLoader
from ariadne import EnumType, ObjectType, QueryType

from adapters.graph import encode_cursor
from domain.authorization import Forbidden
from domain.communities import reading_refusal
from domain.errors import DomainError, InvalidInput
from api.graphql_support import (after_conditions, connection, cursor_key, is_uuid, page_size, principal_of,
                                 signed_in_person, user_node)

URL_LIFETIME = dt.timedelta(hours=1)
Rows = list[dict[str, Any]]


def community_node(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "visibility": row["visibility"], "createdBy": row["created_by"], "memberCount": row["member_count"],
            "postCount": row["post_count"]}


def post_node(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "communityId": row["community_id"], "authorId": row["author_id"], "text": row["text"],
            "media": row["media"] or [], "publishedAt": row["published_at"], "edited": bool(row["edited"]),
            "likeCount": row["like_count"], "commentCount": row["comment_count"]}


def comment_node(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "postId": row["post_id"], "parentId": row["parent_id"] or None, "authorId": row["author_id"],
            "text": row["text"], "writtenAt": row["written_at"], "edited": bool(row["edited"])}


def member_node(row: dict[str, Any]) -> dict[str, Any]:
    return {"userId": row["user_id"], "role": row["role"], "status": row["status"], "since": row["since"]}


def bind(query: QueryType, user_type: ObjectType, container: Any) -> list[Any]:
    """Adds the resolvers to `query` and `user_type`; returns the other types."""
    rm = container.readmodels
    community_type, post_type, comment_type = ObjectType("Community"), ObjectType("Post"), ObjectType("Comment")
    member_type = ObjectType("Member")
    suggestion_types = [ObjectType("CommunitySuggestion"), ObjectType("PersonSuggestion")]

    def viewer(info: Any) -> str | None:
        who = principal_of(info, container)
        return str(who.user_id) if who and who.user_id else None

    def standing(info: Any, community_id: str) -> dict[str, Any] | None:
        """The viewer's membership row in a community (cached per request)."""
        me = viewer(info)
        if me is None:
            return None
        cache = info.context.setdefault("standings", {})
        if community_id not in cache:
            cache[community_id] = rm.get("members", f"{community_id}:{me}")
        return cache[community_id]

    def refusal(info: Any, community: dict[str, Any]) -> DomainError | None:
        row = standing(info, community["id"])
        return reading_refusal(community["visibility"] == "public", row["status"] if row else None)

    def can_read(info: Any, community: dict[str, Any]) -> bool:
        return refusal(info, community) is None

    def hidden_authors(info: Any) -> set[str]:
        """People the viewer blocked or who blocked the viewer (per request)."""
        if "hidden" not in info.context:
            me = viewer(info)
            info.context["hidden"] = set() if me is None else (
                {r["blocked_id"] for r in rm.rows("blocks", where={"blocker_id": me})}
                | {r["blocker_id"] for r in rm.rows("blocks", where={"blocked_id": me})})
        return info.context["hidden"]

    def loader(info: Any, name: str, load: Callable[[list[str]], list[Any]]) -> DataLoader:
        async def batch(keys: list[str]) -> list[Any]:
            return await asyncio.to_thread(load, keys)
        return info.context.setdefault(name, DataLoader(batch))

    def rows_by_id(table: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in rm.rows(table, conditions=[("id", "in", ids)])}

    def visible_post(info: Any, row: dict[str, Any] | None) -> bool:
        if row is None or row["deleted"] or row["author_id"] in hidden_authors(info):
            return False
        community = rm.get("communities", row["community_id"])
        return community is not None and can_read(info, community)

    # --- queries --------------------------------------------------------
    @query.field("community")
    def resolve_community(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        return community_node(rm.get("communities", id)) if is_uuid(id) else None

    @query.field("communities")
    def resolve_communities(_: Any, info: Any, first: int = 20, after: str | None = None) -> dict[str, Any]:
        n = page_size(first)
        rows = rm.rows("communities", order_by="sort_key", limit=n + 1, conditions=after_conditions(after))
        return connection(rows, n, community_node)

    @query.field("post")
    def resolve_post(_: Any, info: Any, id: str) -> dict[str, Any] | None:
        row = rm.get("posts", id) if is_uuid(id) else None
        return post_node(row) if visible_post(info, row) else None  # type: ignore[arg-type]

    @query.field("feed")
    def resolve_feed(_: Any, info: Any, first: int = 20, after: str | None = None, order: str = "new") -> dict[str, Any]:
        who = signed_in_person(info, container)
        try:
            page = container.graph.feed(str(who.user_id), page_size(first), after, order)
        except ValueError as e:
            raise InvalidInput(str(e), field="after") from e
        found = rows_by_id("posts", [i.post_id for i in page.items])
        edges = [{"cursor": encode_cursor(order, i), "node": post_node(found[i.post_id])}
                 for i in page.items if i.post_id in found and not found[i.post_id]["deleted"]]
        return {"edges": edges, "pageInfo": {"hasNextPage": page.has_next, "endCursor": page.end_cursor}}

    @query.field("suggestedCommunities")
    def resolve_suggested_communities(_: Any, info: Any, first: int = 10) -> list[dict[str, Any]]:
        who = signed_in_person(info, container)
        found = container.graph.suggested_communities(str(who.user_id), page_size(first))
        rows = rows_by_id("communities", [s.id for s in found])
        return [{"community": community_node(rows[s.id]), "count": s.count} for s in found if s.id in rows]

    @query.field("suggestedPeople")
    def resolve_suggested_people(_: Any, info: Any, first: int = 10) -> list[dict[str, Any]]:
        who = signed_in_person(info, container)
        found = container.graph.suggested_people(str(who.user_id), page_size(first))
        rows = rows_by_id("users", [s.id for s in found])
        return [{"user": user_node(rows[s.id]), "count": s.count} for s in found if s.id in rows]

    # --- communities ----------------------------------------------------
    @community_type.field("viewerStatus")
    def resolve_viewer_status(community: dict[str, Any], info: Any) -> str | None:
        row = standing(info, community["id"])
        return row["status"] if row else None

    @community_type.field("viewerRole")
    def resolve_viewer_role(community: dict[str, Any], info: Any) -> str | None:
        row = standing(info, community["id"])
        return row["role"] if row and row["status"] == "member" else None

    def check_reader(info: Any, community: dict[str, Any]) -> None:
        error = refusal(info, community)
        if error is not None:
            raise error

    @community_type.field("members")
    def resolve_members(community: dict[str, Any], info: Any, first: int = 50, after: str | None = None) -> dict[str, Any]:
        check_reader(info, community)
        return _members(community, "member", first, after)

    @community_type.field("joinRequests")
    def resolve_requests(community: dict[str, Any], info: Any, first: int = 50, after: str | None = None) -> dict[str, Any]:
        row = standing(info, community["id"])
        who = principal_of(info, container)
        if not ((row and row["status"] == "member" and row["role"] == "admin")
                or (who and "platform_admin" in who.roles)):
            raise Forbidden("only this community's admins see requests to join")
        return _members(community, "requested", first, after)

    def _members(community: dict[str, Any], status: str, first: int, after: str | None) -> dict[str, Any]:
        n = page_size(first)
        rows = rm.rows("members", where={"community_id": community["id"], "status": status}, order_by="sort_key",
                       limit=n + 1, conditions=after_conditions(after))
        return connection(rows, n, member_node)

    @community_type.field("posts")
    def resolve_community_posts(community: dict[str, Any], info: Any, first: int = 20,
                                after: str | None = None) -> dict[str, Any]:
        check_reader(info, community)
        n = page_size(first)
        hidden = hidden_authors(info)
        conds = [("sort_key", "<", cursor_key(after))] if after else []
        rows: Rows = []
        while len(rows) <= n:  # newest first; skip deleted posts and hidden authors
            batch = rm.rows("posts", where={"community_id": community["id"]}, order_by="sort_key DESC",
                            limit=n + 1, conditions=conds)
            rows += [r for r in batch if not r["deleted"] and r["author_id"] not in hidden]
            if len(batch) <= n:
                break
            conds = [("sort_key", "<", batch[-1]["sort_key"])]
        return connection(rows, n, post_node)

    # --- posts and comments ---------------------------------------------
    @post_type.field("community")
    async def resolve_post_community(post: dict[str, Any], info: Any) -> dict[str, Any] | None:
        return community_node(await loader(info, "communities_loader", lambda ids: [
            rows_by_id("communities", ids).get(i) for i in ids]).load(post["communityId"]))

    async def load_user(info: Any, user_id: str) -> dict[str, Any] | None:
        return user_node(await loader(info, "users_loader", lambda ids: [
            rows_by_id("users", ids).get(i) for i in ids]).load(user_id))

    @post_type.field("author")
    async def resolve_post_author(post: dict[str, Any], info: Any) -> dict[str, Any] | None:
        return await load_user(info, post["authorId"])

    @comment_type.field("author")
    async def resolve_comment_author(comment: dict[str, Any], info: Any) -> dict[str, Any] | None:
        return await load_user(info, comment["authorId"])

    @member_type.field("user")
    async def resolve_member_user(member: dict[str, Any], info: Any) -> dict[str, Any] | None:
        return await load_user(info, member["userId"])

    @post_type.field("viewerLikes")
    async def resolve_viewer_likes(post: dict[str, Any], info: Any) -> bool:
        me = viewer(info)
        if me is None:
            return False

        def liked(post_ids: list[str]) -> list[bool]:
            found = {r["post_id"] for r in rm.rows("likes", where={"user_id": me},
                                                   conditions=[("post_id", "in", post_ids)])}
            return [p in found for p in post_ids]
        return await loader(info, "likes_loader", liked).load(post["id"])

    @post_type.field("images")
    def resolve_images(post: dict[str, Any], info: Any) -> list[dict[str, str]]:
        return [{"uploadId": m, "url": container.media.download_url(f"post_image/{post['authorId']}/{m}", URL_LIFETIME)}
                for m in post["media"]]

    @post_type.field("comments")
    def resolve_comments(post: dict[str, Any], info: Any, first: int = 20, after: str | None = None) -> dict[str, Any]:
        n = page_size(first)
        hidden = hidden_authors(info)
        rows = rm.rows("comments", where={"post_id": post["id"], "parent_id": ""}, order_by="sort_key",
                       limit=n + 1, conditions=after_conditions(after))
        page = connection(rows, n, comment_node)
        page["edges"] = [e for e, r in zip(page["edges"], rows)
                         if not r["deleted"] and r["author_id"] not in hidden]
        return page

    @comment_type.field("replies")
    def resolve_replies(comment: dict[str, Any], info: Any, first: int = 20) -> list[dict[str, Any]]:
        hidden = hidden_authors(info)
        rows = rm.rows("comments", where={"parent_id": comment["id"]}, order_by="sort_key", limit=page_size(first))
        return [comment_node(r) for r in rows if not r["deleted"] and r["author_id"] not in hidden]

    @user_type.field("avatarUrl")
    def resolve_avatar(user: dict[str, Any], info: Any) -> str | None:
        row = rm.get("avatars", user["id"])
        if row is None or row["upload_id"] is None:
            return None
        return container.media.download_url(f"avatar/{user['id']}/{row['upload_id']}", URL_LIFETIME)

    feed_order = EnumType("FeedOrder", {"NEW": "new", "TOP": "top"})
    return [community_type, post_type, comment_type, member_type, feed_order, *suggestion_types]

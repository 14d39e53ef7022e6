"""Read models of communities: communities with their counts, members and
join requests, posts and comments with their counts, likes, follows, blocks
and avatars. GraphQL reads counts from here, never by counting rows."""

from __future__ import annotations

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope

COMMUNITIES = Table("communities", columns=(
    ("id", "text"), ("name", "text"), ("description", "text"), ("visibility", "text"), ("created_by", "text"),
    ("created_at", "text"), ("member_count", "int"), ("post_count", "int"), ("version", "int"),
    ("sort_key", "text"),
), indexes=("sort_key",))

MEMBERS = Table("members", columns=(
    ("id", "text"), ("community_id", "text"), ("user_id", "text"), ("status", "text"), ("role", "text"),
    ("since", "text"), ("sort_key", "text"),  # community id | since | user id: members in joining order
), indexes=("community_id", "user_id", "sort_key"))

POSTS = Table("posts", columns=(
    ("id", "text"), ("community_id", "text"), ("author_id", "text"), ("text", "text"), ("media", "json"),
    ("published_at", "text"), ("edited", "bool"), ("deleted", "bool"), ("like_count", "int"),
    ("comment_count", "int"), ("sort_key", "text"),  # published_at | id: newest first by keyset
), indexes=("community_id", "author_id", "sort_key"))

COMMENTS = Table("comments", columns=(
    ("id", "text"), ("post_id", "text"), ("parent_id", "text"),  # "" for a top-level comment
    ("author_id", "text"), ("text", "text"),
    ("written_at", "text"), ("edited", "bool"), ("deleted", "bool"), ("sort_key", "text"),
), indexes=("post_id", "sort_key"))

LIKES = Table("likes", columns=(("id", "text"), ("post_id", "text"), ("user_id", "text")),
              indexes=("post_id", "user_id"))
FOLLOWS = Table("follows", columns=(("id", "text"), ("follower_id", "text"), ("followee_id", "text")),
                indexes=("follower_id", "followee_id"))
BLOCKS = Table("blocks", columns=(("id", "text"), ("blocker_id", "text"), ("blocked_id", "text")),
               indexes=("blocker_id", "blocked_id"))
AVATARS = Table("avatars", columns=(("id", "text"), ("upload_id", "text")))  # id: the user's


def _bump(tx: ReadModelTx, table: str, key: str, column: str, by: int) -> None:
    row = tx.get(table, key)
    if row is not None:
        tx.patch(table, key, {column: max(0, (row[column] or 0) + by)})


class CommunityProjection:
    name = "community"
    tables = (COMMUNITIES, MEMBERS, POSTS, COMMENTS, LIKES, FOLLOWS, BLOCKS, AVATARS)
    STATUS = {"MembershipJoined": "member", "MembershipRequested": "requested", "MembershipApproved": "member",
              "MembershipDeclined": "declined", "MembershipLeft": "left", "MembershipBanned": "banned",
              "MembershipUnbanned": "left"}  # where each change leaves the person
    MEMBERSHIP = frozenset(STATUS) | {"MembershipBegan", "MembershipRoleChanged"}
    event_types = MEMBERSHIP | frozenset({
        "CommunityCreated", "CommunityEdited", "PostPublished", "PostEdited", "PostDeleted", "CommentWritten",
        "CommentEdited", "CommentDeleted", "LikeGiven", "LikeGivenAgain", "LikeWithdrawn", "FollowStarted",
        "FollowResumed", "FollowStopped", "BlockPlaced", "BlockPlacedAgain", "BlockLifted", "UserAvatarChanged",
    })

    def reads(self, e: EventEnvelope) -> list[tuple[str, str]]:
        d, t = e.data, e.event_type
        if t in self.MEMBERSHIP:
            return [("members", f"{d['community_id']}:{d['user_id']}"), ("communities", d["community_id"])]
        if t == "PostPublished":
            return [("communities", d["community_id"])]
        if t == "PostDeleted":
            return [("posts", e.aggregate_id)]
        if t in ("CommentWritten", "CommentDeleted", "LikeGiven", "LikeGivenAgain", "LikeWithdrawn"):
            return [("posts", d["post_id"])]
        return []

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        d, key, t = e.data, e.aggregate_id, e.event_type
        if t in self.MEMBERSHIP:
            self._membership(e, tx)
        elif t == "CommunityCreated":
            tx.upsert("communities", {"id": key, "name": d["name"], "description": d["description"],
                                      "visibility": d["visibility"], "created_by": d["created_by"],
                                      "created_at": e.timestamp, "member_count": 0, "post_count": 0,
                                      "version": e.aggregate_version, "sort_key": f"{d['name'].lower()}|{key}"})
        elif t == "CommunityEdited":
            tx.patch("communities", key, {"name": d["name"], "description": d["description"],
                                          "visibility": d["visibility"], "version": e.aggregate_version,
                                          "sort_key": f"{d['name'].lower()}|{key}"})
        elif t == "PostPublished":
            tx.upsert("posts", {"id": key, "community_id": d["community_id"], "author_id": d["author_id"],
                                "text": d["text"], "media": d["media"], "published_at": d["published_at"],
                                "edited": False, "deleted": False, "like_count": 0, "comment_count": 0,
                                "sort_key": f"{d['published_at']}|{key}"})
            _bump(tx, "communities", d["community_id"], "post_count", 1)
        elif t == "PostEdited":
            tx.patch("posts", key, {"text": d["text"], "media": d["media"], "edited": True})
        elif t == "PostDeleted":
            row = tx.get("posts", key)
            tx.patch("posts", key, {"deleted": True, "text": "", "media": []})
            if row is not None:
                _bump(tx, "communities", row["community_id"], "post_count", -1)
        elif t == "CommentWritten":
            tx.upsert("comments", {"id": key, "post_id": d["post_id"], "parent_id": d["parent_id"] or "",
                                   "author_id": d["author_id"], "text": d["text"], "written_at": d["written_at"],
                                   "edited": False, "deleted": False, "sort_key": f"{d['written_at']}|{key}"})
            _bump(tx, "posts", d["post_id"], "comment_count", 1)
        elif t == "CommentEdited":
            tx.patch("comments", key, {"text": d["text"], "edited": True})
        elif t == "CommentDeleted":
            tx.patch("comments", key, {"deleted": True, "text": ""})
            _bump(tx, "posts", d["post_id"], "comment_count", -1)
        elif t in ("LikeGiven", "LikeGivenAgain"):
            tx.upsert("likes", {"id": key, "post_id": d["post_id"], "user_id": d["user_id"]})
            _bump(tx, "posts", d["post_id"], "like_count", 1)
        elif t == "LikeWithdrawn":
            tx.delete("likes", key)
            _bump(tx, "posts", d["post_id"], "like_count", -1)
        elif t in ("FollowStarted", "FollowResumed"):
            tx.upsert("follows", {"id": key, "follower_id": d["follower_id"], "followee_id": d["followee_id"]})
        elif t == "FollowStopped":
            tx.delete("follows", key)
        elif t in ("BlockPlaced", "BlockPlacedAgain"):
            tx.upsert("blocks", {"id": key, "blocker_id": d["blocker_id"], "blocked_id": d["blocked_id"]})
        elif t == "BlockLifted":
            tx.delete("blocks", key)
        elif t == "UserAvatarChanged":
            tx.upsert("avatars", {"id": key, "upload_id": d["upload_id"]})

    def _membership(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        d = e.data
        community, user = d["community_id"], d["user_id"]
        key = f"{community}:{user}"
        row = tx.get("members", key)
        was = row["status"] if row else None
        if e.event_type == "MembershipRoleChanged":
            tx.patch("members", key, {"role": d["role"]})
            return
        if e.event_type == "MembershipBegan":
            status, role = d["status"], d["role"]
        else:
            status, role = self.STATUS[e.event_type], row["role"] if row else "member"
        if status != "member":
            role = "member"  # a role is held only while a member
        since = e.timestamp if status != was else row["since"]  # type: ignore[index]
        tx.upsert("members", {"id": key, "community_id": community, "user_id": user, "status": status,
                              "role": role, "since": since, "sort_key": f"{community}|{since}|{user}"})
        if (was == "member") != (status == "member"):
            _bump(tx, "communities", community, "member_count", 1 if status == "member" else -1)

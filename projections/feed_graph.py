"""The feed graph: who follows, belongs to, blocks and likes what. Written to
a `FeedGraph` store (Neo4j in full mode, SQL in the embedded default) through
the same projector as the read models."""

from __future__ import annotations

import datetime as dt

from adapters.graph import GraphTx
from domain.envelope import EventEnvelope

ACTIVE_MEMBER = {"MembershipJoined": True, "MembershipApproved": True, "MembershipLeft": False,
                 "MembershipBanned": False}


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


class FeedGraphProjection:
    name = "feed_graph"
    tables = ()  # the store makes its own schema (constraints and indexes)
    event_types = frozenset({
        "UserRegistered", "CommunityCreated", "CommunityEdited", "MembershipBegan", *ACTIVE_MEMBER,
        "FollowStarted", "FollowResumed", "FollowStopped", "BlockPlaced", "BlockPlacedAgain", "BlockLifted",
        "PostPublished", "PostDeleted", "LikeGiven", "LikeGivenAgain", "LikeWithdrawn",
    })

    def apply(self, e: EventEnvelope, tx: GraphTx) -> None:  # type: ignore[override]
        d, t = e.data, e.event_type
        if t == "UserRegistered":
            tx.user(e.aggregate_id)
        elif t in ("CommunityCreated", "CommunityEdited"):
            tx.community(e.aggregate_id, public=d["visibility"] == "public")
        elif t == "MembershipBegan":
            tx.membership(d["community_id"], d["user_id"], active=d["status"] == "member")
        elif t in ACTIVE_MEMBER:
            tx.membership(d["community_id"], d["user_id"], active=ACTIVE_MEMBER[t])
        elif t.startswith("Follow"):
            tx.follow(d["follower_id"], d["followee_id"], active=t != "FollowStopped")
        elif t.startswith("Block"):
            tx.block(d["blocker_id"], d["blocked_id"], active=t != "BlockLifted")
        elif t == "PostPublished":
            tx.post(e.aggregate_id, d["author_id"], d["community_id"], epoch(d["published_at"]))
        elif t == "PostDeleted":
            tx.remove_post(e.aggregate_id)
        elif t.startswith("Like"):
            tx.like(d["user_id"], d["post_id"], active=t != "LikeWithdrawn")

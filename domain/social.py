"""What people share in a community: posts, comments and likes; and how they
relate to each other: follows and blocks.

Likes, follows and blocks are each their own small aggregate whose id derives
from the two things it joins, so liking twice is one like (the second finds
the first), and two people liking one post never contend.
"""

from __future__ import annotations

import datetime as dt
import uuid

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput, NotFound

MAX_MEDIA = 10


class PostDeleted(DomainError):
    code = "POST_DELETED"
    status = 410


# ------------------------------------------------------------------ rules
def check_text(text: str, field: str = "text", limit: int = 5000, required: bool = True) -> str:
    text = text.strip()
    if required and not text:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(text) > limit:
        raise InvalidInput(f"{field} may have at most {limit:,} characters", field=field)
    return text


def check_media(media: list[str]) -> list[str]:
    if len(media) > MAX_MEDIA:
        raise InvalidInput(f"a post may carry at most {MAX_MEDIA} images", field="media")
    try:
        ids = [str(uuid.UUID(m)) for m in media]
    except ValueError as e:
        raise InvalidInput("media are upload ids (UUIDs)", field="media") from e
    if len(set(ids)) != len(ids):
        raise InvalidInput("the same image is attached twice", field="media")
    return ids


def check_not_self(actor: uuid.UUID | str, other: uuid.UUID | str, verb: str) -> None:
    if str(actor) == str(other):
        raise InvalidInput(f"you cannot {verb} yourself", field="user_id")


def pair_id(kind: str, a: uuid.UUID | str, b: uuid.UUID | str) -> uuid.UUID:
    """The id of the relation `kind` from `a` to `b` (one per ordered pair)."""
    return uuid.uuid5(uuid.UUID(str(a)), f"{kind}:{b}")


# ------------------------------------------------------------------ posts
class Post(AttendWiseAggregate):
    CONTEXT = "community"

    class Published(Aggregate.Created):
        PERSONAL = ("text",)  # erased with the author's key when they delete their account
        SUBJECT = "author_id"
        community_id: str
        author_id: str
        text: str
        media: list[str]
        published_at: dt.datetime

    @event(Published)
    def __init__(self, community_id: str, author_id: str, text: str, media: list[str],
                 published_at: dt.datetime) -> None:
        self.community_id, self.author_id, self.text, self.media = community_id, author_id, text, media
        self.published_at = published_at
        self.deleted = False

    @classmethod
    def publish(cls, community_id: uuid.UUID, author_id: uuid.UUID, text: str, media: list[str],
                now: dt.datetime) -> "Post":
        media = check_media(media)
        return cls(community_id=str(community_id), author_id=str(author_id),
                   text=check_text(text, required=not media), media=media, published_at=now)

    def check_live(self) -> None:
        if self.deleted:
            raise PostDeleted("this post was deleted")

    class Edited(Aggregate.Event):
        PERSONAL = ("text",)
        SUBJECT = "author_id"
        author_id: str
        text: str
        media: list[str]

    def edit(self, text: str | None, media: list[str] | None) -> None:
        self.check_live()
        new_media = check_media(media) if media is not None else self.media
        new_text = check_text(text, required=not new_media) if text is not None else self.text
        if not new_text and not new_media:
            raise InvalidInput("a post needs text or an image", field="text")
        if (new_text, new_media) != (self.text, self.media):
            self._edited(self.author_id, new_text, new_media)

    @event(Edited)
    def _edited(self, author_id: str, text: str, media: list[str]) -> None:
        self.text, self.media = text, media

    class Deleted(Aggregate.Event):
        """A tombstone: the post stays in the log, and shows nowhere."""

        by: str

    def delete(self, by: uuid.UUID | str) -> bool:
        if self.deleted:
            return False
        self._deleted(str(by))
        return True

    @event(Deleted)
    def _deleted(self, by: str) -> None:
        self.deleted = True


# ------------------------------------------------------------------ comments
class Comment(AttendWiseAggregate):
    """A comment on a post, or a reply to one (replies are one level deep:
    replying to a reply answers in the same thread)."""

    CONTEXT = "community"

    class Written(Aggregate.Created):
        PERSONAL = ("text",)
        SUBJECT = "author_id"
        post_id: str
        community_id: str
        author_id: str
        parent_id: str | None
        text: str
        written_at: dt.datetime

    @event(Written)
    def __init__(self, post_id: str, community_id: str, author_id: str, parent_id: str | None, text: str,
                 written_at: dt.datetime) -> None:
        self.post_id, self.community_id, self.author_id = post_id, community_id, author_id
        self.parent_id, self.text, self.written_at = parent_id, text, written_at
        self.deleted = False

    @classmethod
    def write(cls, post: Post, author_id: uuid.UUID, text: str, now: dt.datetime,
              replying_to: "Comment | None" = None) -> "Comment":
        post.check_live()
        parent_id = None
        if replying_to is not None:
            if replying_to.post_id != str(post.id):
                raise InvalidInput("the comment replied to is on another post", field="parent_id")
            if replying_to.deleted:
                raise NotFound("the comment replied to was deleted")
            parent_id = replying_to.parent_id or str(replying_to.id)  # one level: join its thread
        return cls(post_id=str(post.id), community_id=post.community_id, author_id=str(author_id),
                   parent_id=parent_id, text=check_text(text, limit=2000), written_at=now)

    class Edited(Aggregate.Event):
        PERSONAL = ("text",)
        SUBJECT = "author_id"
        author_id: str
        text: str

    def edit(self, text: str) -> None:
        if self.deleted:
            raise NotFound("this comment was deleted")
        text = check_text(text, limit=2000)
        if text != self.text:
            self._edited(self.author_id, text)

    @event(Edited)
    def _edited(self, author_id: str, text: str) -> None:
        self.text = text

    class Deleted(Aggregate.Event):
        post_id: str
        by: str

    def delete(self, by: uuid.UUID | str) -> bool:
        if self.deleted:
            return False
        self._deleted(self.post_id, str(by))
        return True

    @event(Deleted)
    def _deleted(self, post_id: str, by: str) -> None:
        self.deleted = True


# ------------------------------------------------------------------ relations
class _Relation(AttendWiseAggregate):
    """An on/off relation between two things, e.g. a like of a post by a
    person. Switching it to the state it is in records nothing."""

    CONTEXT = "community"
    active: bool

    class Toggled(Aggregate.Event):
        ACTIVE = True

        def apply(self, r: "_Relation") -> None:
            r.active = self.ACTIVE

    def _switch(self, on: bool, again: type[Aggregate.Event], off: type[Aggregate.Event], **ids: str) -> bool:
        if on == self.active:
            return False
        self.trigger_event(again if on else off, **ids)
        return True


class Like(_Relation):
    class Given(Aggregate.Created):
        post_id: str
        user_id: str

    @event(Given)
    def __init__(self, post_id: str, user_id: str) -> None:
        self.post_id, self.user_id, self.active = post_id, user_id, True

    @staticmethod
    def create_id(post_id: str, user_id: str) -> uuid.UUID:
        return pair_id("like", post_id, user_id)

    class Withdrawn(_Relation.Toggled):
        ACTIVE = False
        post_id: str
        user_id: str

    class GivenAgain(_Relation.Toggled):
        post_id: str
        user_id: str

    def set(self, on: bool) -> bool:
        return self._switch(on, Like.GivenAgain, Like.Withdrawn, post_id=self.post_id, user_id=self.user_id)


class Follow(_Relation):
    class Started(Aggregate.Created):
        follower_id: str
        followee_id: str

    @event(Started)
    def __init__(self, follower_id: str, followee_id: str) -> None:
        self.follower_id, self.followee_id, self.active = follower_id, followee_id, True

    @staticmethod
    def create_id(follower_id: str, followee_id: str) -> uuid.UUID:
        return pair_id("follow", follower_id, followee_id)

    class Stopped(_Relation.Toggled):
        ACTIVE = False
        follower_id: str
        followee_id: str

    class Resumed(_Relation.Toggled):
        follower_id: str
        followee_id: str

    def set(self, on: bool) -> bool:
        return self._switch(on, Follow.Resumed, Follow.Stopped, follower_id=self.follower_id,
                            followee_id=self.followee_id)


class Block(_Relation):
    """`blocker` no longer sees `blocked`'s content, nor `blocked` theirs."""

    class Placed(Aggregate.Created):
        blocker_id: str
        blocked_id: str

    @event(Placed)
    def __init__(self, blocker_id: str, blocked_id: str) -> None:
        self.blocker_id, self.blocked_id, self.active = blocker_id, blocked_id, True

    @staticmethod
    def create_id(blocker_id: str, blocked_id: str) -> uuid.UUID:
        return pair_id("block", blocker_id, blocked_id)

    class Lifted(_Relation.Toggled):
        ACTIVE = False
        blocker_id: str
        blocked_id: str

    class PlacedAgain(_Relation.Toggled):
        blocker_id: str
        blocked_id: str

    def set(self, on: bool) -> bool:
        return self._switch(on, Block.PlacedAgain, Block.Lifted, blocker_id=self.blocker_id,
                            blocked_id=self.blocked_id)

"""Command API for communities: communities and memberships, posts,
comments, likes, follows, blocks, and image uploads. Reads are GraphQL's."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Deps, Principal
from commands.messages import (BanMember, BlockUser, ChangeAvatar, ChangeMemberRole, ConfirmUpload,
                               CreateCommunity, DecideJoinRequest, DeleteComment, DeletePost, EditCommunity,
                               EditPost, FollowUser, JoinCommunity, LeaveCommunity, LikePost, PublishPost,
                               RequestUpload, WriteComment)
from domain.errors import InvalidInput

router = APIRouter(tags=["communities"])


def done() -> Response:
    return Response(status_code=204)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommunityIn(Strict):
    name: str = Field(max_length=100)
    description: str = Field("", max_length=2000)
    visibility: Literal["public", "private"] = "public"


class CommunityChange(Strict):
    name: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=2000)
    visibility: Literal["public", "private"] | None = None


class Created(BaseModel):
    id: uuid.UUID


class Standing(BaseModel):
    status: Literal["member", "requested"]


class BanIn(Strict):
    reason: str = Field("", max_length=500)


class RoleIn(Strict):
    role: Literal["member", "host", "admin"]


class PostIn(Strict):
    text: str = Field("", max_length=5000)
    media: list[uuid.UUID] = Field(default_factory=list, max_length=10, description="confirmed upload ids")


class PostChange(Strict):
    text: str | None = Field(None, max_length=5000)
    media: list[uuid.UUID] | None = Field(None, max_length=10)


class CommentIn(Strict):
    text: str = Field(max_length=2000)
    parent_id: uuid.UUID | None = Field(None, description="the comment replied to")


class UploadIn(Strict):
    purpose: Literal["avatar", "post_image"]
    content_type: Literal["image/png", "image/jpeg", "image/webp", "image/gif"]
    size: int = Field(ge=1, description="bytes the client will upload")


class UploadOut(BaseModel):
    upload_id: uuid.UUID
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str] = Field(description="form fields to send first, then the file as the `file` field")
    expires_at: dt.datetime
    max_bytes: int


class Confirmed(BaseModel):
    upload_id: uuid.UUID
    size: int


class AvatarIn(Strict):
    upload_id: uuid.UUID | None = Field(description="a confirmed avatar upload; null removes the avatar")


# ---------------------------------------------------------------- communities
@router.post("/communities", status_code=201, response_model=Created)
def create_community(body: CommunityIn, c: Deps, who: Principal) -> Created:
    return Created(id=c.app.create_community(CreateCommunity(body.name, body.description, body.visibility), who))


@router.patch("/communities/{community_id}", status_code=204)
def edit_community(community_id: uuid.UUID, body: CommunityChange, c: Deps, who: Principal) -> Response:
    if not body.model_fields_set:
        raise InvalidInput("nothing to change: send name, description or visibility")
    c.app.edit_community(EditCommunity(community_id, body.name, body.description, body.visibility), who)
    return done()


@router.post("/communities/{community_id}/join", response_model=Standing)
def join_community(community_id: uuid.UUID, c: Deps, who: Principal) -> Standing:
    """Public: you are a member. Private: your request waits for an admin."""
    return Standing(status=c.app.join_community(JoinCommunity(community_id), who))


@router.post("/communities/{community_id}/leave", status_code=204)
def leave_community(community_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.leave_community(LeaveCommunity(community_id), who)
    return done()


@router.post("/communities/{community_id}/requests/{user_id}/{decision}", status_code=204)
def decide_request(community_id: uuid.UUID, user_id: uuid.UUID, decision: Literal["approve", "decline"],
                   c: Deps, who: Principal) -> Response:
    c.app.decide_join_request(DecideJoinRequest(community_id, user_id, decision == "approve"), who)
    return done()


@router.put("/communities/{community_id}/bans/{user_id}", status_code=204)
def ban_member(community_id: uuid.UUID, user_id: uuid.UUID, body: BanIn, c: Deps, who: Principal) -> Response:
    c.app.ban_member(BanMember(community_id, user_id, body.reason), who)
    return done()


@router.delete("/communities/{community_id}/bans/{user_id}", status_code=204)
def lift_ban(community_id: uuid.UUID, user_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.ban_member(BanMember(community_id, user_id, lift=True), who)
    return done()


@router.put("/communities/{community_id}/members/{user_id}/role", status_code=204)
def change_role(community_id: uuid.UUID, user_id: uuid.UUID, body: RoleIn, c: Deps, who: Principal) -> Response:
    c.app.change_member_role(ChangeMemberRole(community_id, user_id, body.role), who)
    return done()


# ---------------------------------------------------------------- posts
@router.post("/communities/{community_id}/posts", status_code=201, response_model=Created)
def publish_post(community_id: uuid.UUID, body: PostIn, c: Deps, who: Principal) -> Created:
    cmd = PublishPost(community_id, body.text, [str(m) for m in body.media])
    return Created(id=c.app.publish_post(cmd, who, c.clock()))


@router.patch("/posts/{post_id}", status_code=204)
def edit_post(post_id: uuid.UUID, body: PostChange, c: Deps, who: Principal) -> Response:
    media = None if body.media is None else [str(m) for m in body.media]
    c.app.edit_post(EditPost(post_id, body.text, media), who)
    return done()


@router.delete("/posts/{post_id}", status_code=204)
def delete_post(post_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.delete_post(DeletePost(post_id), who)
    return done()


@router.post("/posts/{post_id}/comments", status_code=201, response_model=Created)
def write_comment(post_id: uuid.UUID, body: CommentIn, c: Deps, who: Principal) -> Created:
    return Created(id=c.app.write_comment(WriteComment(post_id, body.text, body.parent_id), who, c.clock()))


@router.delete("/comments/{comment_id}", status_code=204)
def delete_comment(comment_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.delete_comment(DeleteComment(comment_id), who)
    return done()


# PUT/DELETE: each is idempotent, as the rule is (liking twice is one like)
@router.put("/posts/{post_id}/like", status_code=204)
def like(post_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.like_post(LikePost(post_id, True), who)
    return done()


@router.delete("/posts/{post_id}/like", status_code=204)
def unlike(post_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.like_post(LikePost(post_id, False), who)
    return done()


@router.put("/users/{user_id}/follow", status_code=204)
def follow(user_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.follow_user(FollowUser(user_id, True), who)
    return done()


@router.delete("/users/{user_id}/follow", status_code=204)
def unfollow(user_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.follow_user(FollowUser(user_id, False), who)
    return done()


@router.put("/users/{user_id}/block", status_code=204)
def block(user_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.block_user(BlockUser(user_id, True), who)
    return done()


@router.delete("/users/{user_id}/block", status_code=204)
def unblock(user_id: uuid.UUID, c: Deps, who: Principal) -> Response:
    c.app.block_user(BlockUser(user_id, False), who)
    return done()


# ---------------------------------------------------------------- media
@router.post("/media/uploads", status_code=201, response_model=UploadOut, tags=["media"])
def request_upload(body: UploadIn, c: Deps, who: Principal) -> UploadOut:
    """A form to upload the image straight to storage (POST multipart: the
    `fields`, then `file`). It fixes the type and size and expires; then
    confirm the upload."""
    t = c.app.request_upload(RequestUpload(body.purpose, body.content_type, body.size), who, c.clock())
    return UploadOut(upload_id=t.upload_id, url=t.url, fields=t.fields, expires_at=t.expires_at,
                     max_bytes=t.max_bytes)


@router.post("/media/uploads/{upload_id}/confirm", response_model=Confirmed, tags=["media"])
def confirm_upload(upload_id: uuid.UUID, c: Deps, who: Principal) -> Confirmed:
    return Confirmed(upload_id=upload_id, size=c.app.confirm_upload(ConfirmUpload(upload_id), who))


@router.put("/me/avatar", status_code=204, tags=["identity"])
def change_avatar(body: AvatarIn, c: Deps, who: Principal) -> Response:
    c.app.change_avatar(ChangeAvatar(body.upload_id), who)
    return done()

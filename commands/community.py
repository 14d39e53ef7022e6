"""Community handlers: communities and memberships, posts, comments, likes,
follows, blocks, and image uploads. Each command loads what it touches,
checks the rules, and saves the new events atomically."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from commands.messages import (BanMember, BlockUser, ChangeAvatar, ChangeMemberRole, CommandContext,
                               ConfirmUpload, CreateCommunity, DecideJoinRequest, DeleteComment, DeletePost,
                               EditCommunity, EditPost, FollowUser, JoinCommunity, LeaveCommunity, LikePost,
                               PublishPost, RequestUpload, WriteComment)
from commands.loading import Loader
from domain.authorization import Forbidden, check_signed_in, privileged
from domain.communities import (Community, Membership, NotAMember, check_can_read, check_community_admin, check_member,
                                membership_id)
from domain.errors import InvalidInput, NotFound
from domain.media import UPLOAD_WINDOW, Upload, check_upload
from domain.social import Block, Comment, Follow, Like, Post, check_media, check_not_self


@dataclass(frozen=True)
class UploadTicket:
    """Where and how the client uploads the bytes of an upload."""

    upload_id: uuid.UUID
    url: str
    fields: dict[str, str]
    expires_at: dt.datetime
    max_bytes: int


class CommunityHandlers(Loader):
    """Mixed into the `AttendWise` application."""

    save_stamped: Any
    media: Any  # MediaStore
    get_user: Any

    # --- loading --------------------------------------------------------
    def get_community(self, community_id: uuid.UUID) -> Community:
        return self._get(community_id, Community, "community")

    def membership(self, community_id: uuid.UUID | str, user_id: uuid.UUID | str | None) -> Membership | None:
        return None if user_id is None else self._find(membership_id(community_id, user_id), Membership)

    def _visible_post(self, post_id: uuid.UUID, ctx: CommandContext) -> Post:
        """The post, if the actor may see it: readable community, no block
        between them and the author; otherwise it does not exist for them."""
        check_signed_in(ctx.user_id, ctx.roles)
        post = self._get(post_id, Post, "post")
        community = self.get_community(uuid.UUID(post.community_id))
        try:
            check_can_read(ctx.user_id, ctx.roles, community, self.membership(community.id, ctx.user_id))
        except NotAMember:
            raise NotFound(f"no post {post_id}") from None
        if ctx.user_id is not None and self.blocked_between(ctx.user_id, post.author_id):
            raise NotFound(f"no post {post_id}")
        post.check_live()
        return post

    def blocked_between(self, a: uuid.UUID | str, b: uuid.UUID | str) -> bool:
        return any(getattr(self._find(Block.create_id(str(x), str(y)), Block), "active", False)
                   for x, y in ((a, b), (b, a)))

    # --- communities ----------------------------------------------------
    def create_community(self, cmd: CreateCommunity, ctx: CommandContext) -> uuid.UUID:
        check_signed_in(ctx.user_id, ctx.roles)
        if ctx.user_id is None:
            raise Forbidden("a community is created by a person, who becomes its first admin")
        community = Community.found(cmd.name, cmd.description, cmd.visibility, ctx.user_id)
        founder = Membership.first(community, ctx.user_id, role="admin", status="member")
        self.save_stamped(ctx, community, founder)
        return community.id

    def edit_community(self, cmd: EditCommunity, ctx: CommandContext) -> None:
        community = self.get_community(cmd.community_id)
        check_community_admin(ctx.user_id, ctx.roles, self.membership(community.id, ctx.user_id))
        community.edit(cmd.name, cmd.description, cmd.visibility)
        self.save_stamped(ctx, community)

    def join_community(self, cmd: JoinCommunity, ctx: CommandContext) -> str:
        """Returns the person's status afterwards: `member` or `requested`."""
        check_signed_in(ctx.user_id, ctx.roles)
        community = self.get_community(cmd.community_id)
        m = self.membership(community.id, ctx.user_id)
        if m is None:
            m = Membership.first(community, ctx.user_id)  # type: ignore[arg-type]
        elif not m.join(community.public):
            return m.status
        self.save_stamped(ctx, m)
        return m.status

    def leave_community(self, cmd: LeaveCommunity, ctx: CommandContext) -> None:
        check_signed_in(ctx.user_id, ctx.roles)
        m = self.membership(cmd.community_id, ctx.user_id)
        if m is not None and m.leave():
            self.save_stamped(ctx, m)

    def decide_join_request(self, cmd: DecideJoinRequest, ctx: CommandContext) -> None:
        check_community_admin(ctx.user_id, ctx.roles, self.membership(cmd.community_id, ctx.user_id))
        m = self._get(membership_id(cmd.community_id, cmd.user_id), Membership, "request to join")
        m.approve(ctx.actor) if cmd.approve else m.decline(ctx.actor)
        self.save_stamped(ctx, m)

    def ban_member(self, cmd: BanMember, ctx: CommandContext) -> None:
        community = self.get_community(cmd.community_id)
        check_community_admin(ctx.user_id, ctx.roles, self.membership(community.id, ctx.user_id))
        check_not_self(ctx.user_id or "", cmd.user_id, "ban")
        m = self.membership(community.id, cmd.user_id)
        if m is not None and m.is_admin and not privileged(ctx.roles):
            raise Forbidden("an admin cannot be banned; change their role first")
        if m is None:
            if cmd.lift:
                return
            m = Membership.first(community, cmd.user_id, status="left")
        m.unban(ctx.actor) if cmd.lift else m.ban(ctx.actor, cmd.reason)
        self.save_stamped(ctx, m)

    def change_member_role(self, cmd: ChangeMemberRole, ctx: CommandContext) -> None:
        check_community_admin(ctx.user_id, ctx.roles, self.membership(cmd.community_id, ctx.user_id))
        m = self.membership(cmd.community_id, cmd.user_id)
        if m is None:
            raise NotFound(f"{cmd.user_id} is not a member of this community")
        m.change_role(cmd.role)
        self.save_stamped(ctx, m)

    # --- posts and comments ---------------------------------------------
    def publish_post(self, cmd: PublishPost, ctx: CommandContext, now: dt.datetime) -> uuid.UUID:
        community = self.get_community(cmd.community_id)
        check_member(ctx.user_id, ctx.roles, self.membership(community.id, ctx.user_id))
        post = Post.publish(community.id, ctx.user_id, cmd.text, cmd.media, now)  # type: ignore[arg-type]
        self._check_images(post.media, ctx)
        self.save_stamped(ctx, post)
        return post.id

    def _check_images(self, media: list[str], ctx: CommandContext) -> None:
        for upload_id in media:
            upload = self._find(uuid.UUID(upload_id), Upload)
            if upload is None:
                raise InvalidInput(f"no upload {upload_id}", field="media")
            upload.check_usable(ctx.user_id, "post_image")

    def edit_post(self, cmd: EditPost, ctx: CommandContext) -> None:
        post = self._get(cmd.post_id, Post, "post")
        if str(ctx.user_id) != post.author_id:
            raise Forbidden("only the author edits a post")
        if cmd.media is not None:
            self._check_images(check_media(cmd.media), ctx)
        post.edit(cmd.text, cmd.media)
        self.save_stamped(ctx, post)

    def delete_post(self, cmd: DeletePost, ctx: CommandContext) -> None:
        """The author, a community admin or a platform admin deletes a post."""
        post = self._get(cmd.post_id, Post, "post")
        if str(ctx.user_id) != post.author_id:
            check_community_admin(ctx.user_id, ctx.roles, self.membership(post.community_id, ctx.user_id))
        if post.delete(ctx.actor):
            self.save_stamped(ctx, post)

    def write_comment(self, cmd: WriteComment, ctx: CommandContext, now: dt.datetime) -> uuid.UUID:
        post = self._visible_post(cmd.post_id, ctx)
        community = self.get_community(uuid.UUID(post.community_id))
        m = self.membership(community.id, ctx.user_id)
        if not community.public:
            check_member(ctx.user_id, ctx.roles, m)
        parent = None if cmd.parent_id is None else self._get(cmd.parent_id, Comment, "comment")
        comment = Comment.write(post, ctx.user_id, cmd.text, now, replying_to=parent)  # type: ignore[arg-type]
        self.save_stamped(ctx, comment)
        return comment.id

    def delete_comment(self, cmd: DeleteComment, ctx: CommandContext) -> None:
        comment = self._get(cmd.comment_id, Comment, "comment")
        if str(ctx.user_id) != comment.author_id:
            check_community_admin(ctx.user_id, ctx.roles, self.membership(comment.community_id, ctx.user_id))
        if comment.delete(ctx.actor):
            self.save_stamped(ctx, comment)

    # --- likes, follows, blocks -----------------------------------------
    def _set_relation(self, ctx: CommandContext, kind: type, on: bool, extra: tuple[Any, ...] = (),
                      **ids: str) -> bool:
        """Switch an on/off relation; returns whether anything changed. Two
        requests creating it at once: the loser reloads and finds it done."""
        def work() -> tuple[bool, list[Any]]:
            rel = self._find(kind.create_id(**ids), kind)
            if rel is None:
                if not on:
                    return False, []
                rel = kind(**ids)
            elif not rel.set(on):
                return False, []
            return True, [rel, *extra]
        return self._save_retrying(ctx, work, attempts=2)

    def like_post(self, cmd: LikePost, ctx: CommandContext) -> bool:
        post = self._visible_post(cmd.post_id, ctx)
        return self._set_relation(ctx, Like, cmd.like, post_id=str(post.id), user_id=str(ctx.user_id))

    def follow_user(self, cmd: FollowUser, ctx: CommandContext) -> bool:
        check_signed_in(ctx.user_id, ctx.roles)
        check_not_self(ctx.user_id or "", cmd.user_id, "follow")
        if cmd.follow:
            self.get_user(cmd.user_id)
            if self.blocked_between(ctx.user_id, cmd.user_id):  # type: ignore[arg-type]
                raise Forbidden("you cannot follow someone you blocked or who blocked you")
        return self._set_relation(ctx, Follow, cmd.follow, follower_id=str(ctx.user_id),
                                  followee_id=str(cmd.user_id))

    def block_user(self, cmd: BlockUser, ctx: CommandContext) -> bool:
        """Blocking also ends follows both ways, in the same commit."""
        check_signed_in(ctx.user_id, ctx.roles)
        check_not_self(ctx.user_id or "", cmd.user_id, "block")
        me, them = str(ctx.user_id), str(cmd.user_id)
        unfollows: tuple[Any, ...] = ()
        if cmd.block:
            self.get_user(cmd.user_id)
            follows = [self._find(Follow.create_id(a, b), Follow) for a, b in ((me, them), (them, me))]
            unfollows = tuple(f for f in follows if f is not None and f.set(False))
        return self._set_relation(ctx, Block, cmd.block, extra=unfollows, blocker_id=me, blocked_id=them)

    # --- media ----------------------------------------------------------
    def request_upload(self, cmd: RequestUpload, ctx: CommandContext, now: dt.datetime) -> UploadTicket:
        check_signed_in(ctx.user_id, ctx.roles)
        if ctx.user_id is None:
            raise Forbidden("uploads belong to a person")
        upload = Upload.request(ctx.user_id, cmd.purpose, cmd.content_type, cmd.size)
        form = self.media.upload_form(upload.key, upload.content_type, upload.max_bytes, UPLOAD_WINDOW)
        self.save_stamped(ctx, upload)
        return UploadTicket(upload.id, form.url, form.fields, form.expires_at, upload.max_bytes)

    def confirm_upload(self, cmd: ConfirmUpload, ctx: CommandContext) -> int:
        """Checks the stored object (exists, size, type by header and bytes)
        and records the confirmation; returns the size. Confirming twice is
        confirming once."""
        upload = self._get(cmd.upload_id, Upload, "upload")
        if upload.owner_id != str(ctx.user_id):
            raise NotFound(f"no upload {cmd.upload_id}")
        if upload.confirmed:
            return upload.size
        size = check_upload(self.media.stat(upload.key), upload.content_type, upload.max_bytes).size
        upload.confirm(size)
        self.save_stamped(ctx, upload)
        return size

    def change_avatar(self, cmd: ChangeAvatar, ctx: CommandContext) -> None:
        check_signed_in(ctx.user_id, ctx.roles)
        user = self.get_user(ctx.user_id)
        if cmd.upload_id is not None:
            self._get(cmd.upload_id, Upload, "upload").check_usable(ctx.user_id, "avatar")  # type: ignore[arg-type]
        user.change_avatar(None if cmd.upload_id is None else str(cmd.upload_id))
        self.save_stamped(ctx, user)

"""Commands are requests to change something; they may be refused."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CommandContext:
    """Who asked, and which request this is. Stamped on every event the command
    causes (`actor`, `command_id`) so the log answers "who did this, and why"."""

    actor: str = "anonymous"
    command_id: uuid.UUID = field(default_factory=uuid.uuid4)
    user_id: uuid.UUID | None = None  # the signed-in user, if any
    roles: frozenset[str] = frozenset()

    @classmethod
    def for_user(cls, user_id: uuid.UUID | str, roles: frozenset[str] | set[str] = frozenset({"member"}),
                 command_id: uuid.UUID | None = None) -> "CommandContext":
        uid = uuid.UUID(str(user_id))
        return cls(actor=f"user:{uid}", command_id=command_id or uuid.uuid4(), user_id=uid, roles=frozenset(roles))

    @classmethod
    def system(cls, name: str) -> "CommandContext":
        """A job of the platform itself (the horizon scheduler, a benchmark)."""
        return cls(actor=name, roles=frozenset({"system"}))


@dataclass(frozen=True)
class RegisterUser:
    email: str
    display_name: str
    time_zone: str = "UTC"
    password: str | None = field(default=None, repr=False)  # never logged


@dataclass(frozen=True)
class ChangeDisplayName:
    user_id: uuid.UUID
    display_name: str


# ------------------------------------------------------------------ scheduling
@dataclass(frozen=True)
class ScheduleSeries:
    title: str
    host_ids: list[str]
    start: datetime.datetime  # local wall time of the first session
    time_zone: str
    duration_minutes: int
    rule: str | None = None  # RRULE value, e.g. "FREQ=WEEKLY;BYDAY=TU;COUNT=4"
    exdates: list[datetime.datetime] = field(default_factory=list)
    rdates: list[datetime.datetime] = field(default_factory=list)
    community_id: str | None = None
    location: dict | None = None
    capacity: int | None = None
    visibility: str = "public"


@dataclass(frozen=True)
class ChangeSession:
    """Change one occurrence. Fields left as None stay as they are, except
    where `clear_location` / `clear_capacity` ask to empty them."""

    session_id: uuid.UUID
    start: datetime.datetime | None = None
    location: dict | None = None
    capacity: int | None = None
    clear_location: bool = False
    clear_capacity: bool = False


@dataclass(frozen=True)
class CancelSession:
    session_id: uuid.UUID
    reason: str = ""


@dataclass(frozen=True)
class ChangeSeriesRule:
    """Change the whole series' rule: what no longer occurs is cancelled,
    what newly occurs is added; sessions with check-ins or in the past stay."""

    series_id: uuid.UUID
    start: datetime.datetime
    time_zone: str
    duration_minutes: int
    rule: str | None
    exdates: list[datetime.datetime] = field(default_factory=list)
    rdates: list[datetime.datetime] = field(default_factory=list)


@dataclass(frozen=True)
class ChangeThisAndFollowing:
    """"This and all following": the series is split at `session_id`; a new
    series carries the changes from that occurrence on."""

    session_id: uuid.UUID
    start_time: datetime.time | None = None  # new local time of day
    duration_minutes: int | None = None
    rule: str | None = None  # new rule from here on (default: the same rule)
    title: str | None = None
    location: dict | None = None
    capacity: int | None = None


# ------------------------------------------------------------------ communities
@dataclass(frozen=True)
class CreateCommunity:
    name: str
    description: str = ""
    visibility: str = "public"


@dataclass(frozen=True)
class EditCommunity:
    community_id: uuid.UUID
    name: str | None = None
    description: str | None = None
    visibility: str | None = None


@dataclass(frozen=True)
class JoinCommunity:
    community_id: uuid.UUID


@dataclass(frozen=True)
class LeaveCommunity:
    community_id: uuid.UUID


@dataclass(frozen=True)
class DecideJoinRequest:
    community_id: uuid.UUID
    user_id: uuid.UUID
    approve: bool


@dataclass(frozen=True)
class BanMember:
    community_id: uuid.UUID
    user_id: uuid.UUID
    reason: str = ""
    lift: bool = False  # True: lift the ban


@dataclass(frozen=True)
class ChangeMemberRole:
    community_id: uuid.UUID
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True)
class PublishPost:
    community_id: uuid.UUID
    text: str
    media: list[str] = field(default_factory=list)  # confirmed upload ids


@dataclass(frozen=True)
class EditPost:
    post_id: uuid.UUID
    text: str | None = None
    media: list[str] | None = None


@dataclass(frozen=True)
class DeletePost:
    post_id: uuid.UUID


@dataclass(frozen=True)
class WriteComment:
    post_id: uuid.UUID
    text: str
    parent_id: uuid.UUID | None = None  # the comment replied to


@dataclass(frozen=True)
class DeleteComment:
    comment_id: uuid.UUID


@dataclass(frozen=True)
class LikePost:
    post_id: uuid.UUID
    like: bool = True  # False: unlike


@dataclass(frozen=True)
class FollowUser:
    user_id: uuid.UUID
    follow: bool = True  # False: unfollow


@dataclass(frozen=True)
class BlockUser:
    user_id: uuid.UUID
    block: bool = True  # False: unblock


# ------------------------------------------------------------------ media
@dataclass(frozen=True)
class RequestUpload:
    purpose: str  # "avatar" or "post_image"
    content_type: str
    size: int


@dataclass(frozen=True)
class ConfirmUpload:
    upload_id: uuid.UUID


@dataclass(frozen=True)
class ChangeAvatar:
    upload_id: uuid.UUID | None  # None removes the avatar


# ------------------------------------------------------------------ attendance
@dataclass(frozen=True)
class ReservePlace:
    session_id: uuid.UUID
    scope: str = "session"  # "session", "following" (this and all following) or "series"


@dataclass(frozen=True)
class GiveUpPlace:
    session_id: uuid.UUID
    scope: str = "session"


@dataclass(frozen=True)
class SetCheckInPolicy:
    session_id: uuid.UUID
    policy: str  # "face" or "qr"
    opens_minutes: int = 60
    closes_minutes: int = 60


@dataclass(frozen=True)
class Scan:
    """A ticket shown at a scanner (and, for face check-in, a fresh photo)."""

    token: str
    device_id: str
    gate: str = "main"
    direction: str = "in"  # "in" or "out"
    scanned_at: datetime.datetime | None = None  # the device's clock; required for offline scans
    image: bytes | None = field(default=None, repr=False)
    offline: bool = False
    session_id: uuid.UUID | None = None  # the session the scanner admits to; a ticket for another is refused


@dataclass(frozen=True)
class MarkAttendance:
    session_id: uuid.UUID
    user_id: uuid.UUID
    present: bool
    reason: str


@dataclass(frozen=True)
class AnnulCheckIn:
    checkin_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class ResolveConflict:
    checkin_id: uuid.UUID
    accept: bool

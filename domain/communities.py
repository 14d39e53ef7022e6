"""Communities and who belongs to them.

A `Community` is public (anyone may join, anyone may read) or private (joining
is a request an admin approves; only members read). Each person's standing in
a community is its own `Membership` aggregate, so thousands of members never
contend on one aggregate, and "is this person an admin here?" is one read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from eventsourcing.domain import Aggregate, event

from domain.authorization import Forbidden, check_signed_in, privileged
from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput

COMMUNITY_VISIBILITIES = ("public", "private")
ROLES = ("member", "host", "admin")  # a host schedules the community's series; an admin runs the community


class BannedFromCommunity(DomainError):
    code = "BANNED"
    status = 403


class NotAMember(DomainError):
    code = "NOT_A_MEMBER"
    status = 403


class NoPendingRequest(DomainError):
    code = "NO_PENDING_REQUEST"
    status = 409


# ------------------------------------------------------------------ rules
def check_community_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= 100:
        raise InvalidInput("a community's name must have 1 to 100 characters", field="name")
    return name


def check_description(text: str) -> str:
    text = text.strip()
    if len(text) > 2000:
        raise InvalidInput("a description may have at most 2,000 characters", field="description")
    return text


def check_community_visibility(visibility: str) -> str:
    if visibility not in COMMUNITY_VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(COMMUNITY_VISIBILITIES)}", field="visibility")
    return visibility


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def membership_id(community_id: uuid.UUID | str, user_id: uuid.UUID | str) -> uuid.UUID:
    """One membership per person and community, whatever happens to it."""
    return uuid.uuid5(uuid.UUID(str(community_id)), f"member:{user_id}")


# ------------------------------------------------------------------ community
class Community(AttendWiseAggregate):
    CONTEXT = "community"

    class Created(Aggregate.Created):
        name: str
        description: str
        visibility: str
        created_by: str

    @event(Created)
    def __init__(self, name: str, description: str, visibility: str, created_by: str) -> None:
        self.name, self.description, self.visibility, self.created_by = name, description, visibility, created_by

    @classmethod
    def found(cls, name: str, description: str, visibility: str, created_by: uuid.UUID) -> "Community":
        return cls(name=check_community_name(name), description=check_description(description),
                   visibility=check_community_visibility(visibility), created_by=str(created_by))

    class Edited(Aggregate.Event):
        name: str
        description: str
        visibility: str

    def edit(self, name: str | None, description: str | None, visibility: str | None) -> None:
        new = (check_community_name(name) if name is not None else self.name,
               check_description(description) if description is not None else self.description,
               check_community_visibility(visibility) if visibility is not None else self.visibility)
        if new != (self.name, self.description, self.visibility):
            self._edited(*new)

    @event(Edited)
    def _edited(self, name: str, description: str, visibility: str) -> None:
        self.name, self.description, self.visibility = name, description, visibility

    @property
    def public(self) -> bool:
        return self.visibility == "public"


# ------------------------------------------------------------------ membership
class Membership(AttendWiseAggregate):
    """A person's standing in one community: `requested`, `member`, `left`,
    `declined` or `banned`, with a role while a member. Every event names the
    community and the person, so projections need no lookups."""

    CONTEXT = "community"

    class Began(Aggregate.Created):
        community_id: str
        user_id: str
        status: str
        role: str

    @event(Began)
    def __init__(self, community_id: str, user_id: str, status: str, role: str) -> None:
        self.community_id, self.user_id, self.status, self.role = community_id, user_id, status, role

    @staticmethod
    def create_id(community_id: str, user_id: str, **_: object) -> uuid.UUID:
        return membership_id(community_id, user_id)

    @property
    def active(self) -> bool:
        return self.status == "member"

    @property
    def is_admin(self) -> bool:
        return self.active and self.role == "admin"

    @property
    def can_host(self) -> bool:
        return self.active and self.role in ("host", "admin")

    class Change(Aggregate.Event):
        """A change of standing; `STATUS` is where it leaves the person
        (None: unchanged). Leaving membership resets the role."""

        community_id: str
        user_id: str
        STATUS = None

        def apply(self, m: "Membership") -> None:
            if self.STATUS is not None:
                m.status = self.STATUS
                if self.STATUS != "member":
                    m.role = "member"

    class Joined(Change):
        STATUS = "member"

    class Requested(Change):
        STATUS = "requested"

    class Approved(Change):
        STATUS = "member"
        by: str

    class Declined(Change):
        STATUS = "declined"
        by: str

    class Left(Change):
        STATUS = "left"

    class Banned(Change):
        STATUS = "banned"
        by: str
        reason: str

    class Unbanned(Change):
        STATUS = "left"
        by: str

    class RoleChanged(Change):
        role: str

        def apply(self, m: "Membership") -> None:
            m.role = self.role

    def _trigger(self, cls: type["Membership.Change"], **kw: str) -> None:
        self.trigger_event(cls, community_id=self.community_id, user_id=self.user_id, **kw)

    def join(self, public: bool) -> bool:
        """Join a public community, or ask to join a private one. Returns
        whether anything changed (asking twice is asking once)."""
        if self.status == "banned":
            raise BannedFromCommunity("you are banned from this community")
        if self.status == "member" or (self.status == "requested" and not public):
            return False
        self._trigger(Membership.Joined if public else Membership.Requested)
        return True

    def approve(self, by: uuid.UUID | str) -> None:
        if self.status != "requested":
            raise NoPendingRequest("there is no request to join from this person")
        self._trigger(Membership.Approved, by=str(by))

    def decline(self, by: uuid.UUID | str) -> None:
        if self.status != "requested":
            raise NoPendingRequest("there is no request to join from this person")
        self._trigger(Membership.Declined, by=str(by))

    def leave(self) -> bool:
        if self.status not in ("member", "requested"):
            return False
        self._trigger(Membership.Left)
        return True

    def ban(self, by: uuid.UUID | str, reason: str) -> None:
        if self.status != "banned":
            self._trigger(Membership.Banned, by=str(by), reason=reason.strip()[:500])

    def unban(self, by: uuid.UUID | str) -> None:
        if self.status == "banned":
            self._trigger(Membership.Unbanned, by=str(by))

    def change_role(self, role: str) -> None:
        check_role(role)
        if not self.active:
            raise NotAMember("only a member can be given a role")
        if role != self.role:
            self._trigger(Membership.RoleChanged, role=role)

    @classmethod
    def first(cls, community: Community, user_id: uuid.UUID | str, role: str = "member",
              status: str | None = None) -> "Membership":
        return cls(community_id=str(community.id), user_id=str(user_id),
                   status=status or ("member" if community.public else "requested"), role=role)


# ------------------------------------------------------------------ authorisation
def check_community_admin(user_id: uuid.UUID | None, roles: Iterable[str], membership: Membership | None) -> None:
    """Only the community's admins (or a platform admin) run a community."""
    check_signed_in(user_id, roles)
    if not privileged(roles) and (membership is None or not membership.is_admin):
        raise Forbidden("only this community's admins may do this")


def check_community_host(user_id: uuid.UUID | None, roles: Iterable[str], membership: Membership | None) -> None:
    """A community's hosts and admins schedule its sessions."""
    check_signed_in(user_id, roles)
    if not privileged(roles) and (membership is None or not membership.can_host):
        raise Forbidden("only this community's hosts and admins schedule its sessions")


def check_member(user_id: uuid.UUID | None, roles: Iterable[str], membership: Membership | None) -> None:
    check_signed_in(user_id, roles)
    if privileged(roles):
        return
    if membership is not None and membership.status == "banned":
        raise BannedFromCommunity("you are banned from this community")
    if membership is None or not membership.active:
        raise NotAMember("join this community first")


def reading_refusal(public: bool, status: str | None, roles: Iterable[str] = ()) -> DomainError | None:
    """Why someone whose standing in a community is `status` (None: none)
    may not read it, or None when they may: public communities are read by
    anyone not banned, private ones by members. One rule for commands (on
    aggregates) and reads (on read-model rows)."""
    if privileged(roles):
        return None
    if status == "banned":
        return BannedFromCommunity("you are banned from this community")
    if not public and status != "member":
        return NotAMember("this community is private: join it to read it")
    return None


def check_can_read(user_id: uuid.UUID | None, roles: Iterable[str], community: Community,
                   membership: Membership | None) -> None:
    if not community.public:
        check_signed_in(user_id, roles)
    refusal = reading_refusal(community.public, membership.status if membership else None, roles)
    if refusal is not None:
        raise refusal

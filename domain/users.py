"""Users: who registers, and the rules a registration obeys."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import EmailAlreadyRegistered as EmailTaken
from domain.errors import InvalidInput

EMAIL_NAMESPACE = uuid.UUID("6b0c4a44-8a39-4b8e-9d0e-2f6d1f3c5a10")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def normalise_email(email: str) -> str:
    """Emails compare case-insensitively and without surrounding blanks."""
    return email.strip().lower()


def check_email(email: str) -> str:
    email = normalise_email(email)
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput("email is not a valid address", field="email")
    return email


def check_display_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= 80:
        raise InvalidInput("display name must have 1 to 80 characters", field="display_name")
    return name


def check_time_zone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(f"unknown time zone {tz!r}", field="time_zone") from e
    return tz


class User(AttendWiseAggregate):
    CONTEXT = "identity"

    class Registered(Aggregate.Created):
        """A person registered. Schema v2 added `time_zone` (v1 events read as UTC)."""

        PERSONAL = ("email", "display_name")  # encrypted with the person's key (crypto-shredding)
        email: str
        display_name: str
        time_zone: str
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["time_zone"] = "UTC"

    @event(Registered)
    def __init__(self, email: str, display_name: str, time_zone: str) -> None:
        self.email = email
        self.display_name = display_name
        self.time_zone = time_zone

    class DisplayNameChanged(Aggregate.Event):
        PERSONAL = ("display_name",)
        display_name: str

    def change_display_name(self, display_name: str) -> None:
        self._display_name_changed(check_display_name(display_name))

    @event(DisplayNameChanged)
    def _display_name_changed(self, display_name: str) -> None:
        self.display_name = display_name

    class TimeZoneChanged(Aggregate.Event):
        time_zone: str

    def change_time_zone(self, time_zone: str) -> None:
        self._time_zone_changed(check_time_zone(time_zone))

    @event(TimeZoneChanged)
    def _time_zone_changed(self, time_zone: str) -> None:
        self.time_zone = time_zone

    class PasswordChanged(Aggregate.Event):
        """The hash itself is never in the log; this records that (and when) it changed."""

        at: dt.datetime

    def record_password_change(self, at: dt.datetime) -> None:
        self._password_changed(at=at)

    @event(PasswordChanged)
    def _password_changed(self, at: dt.datetime) -> None:
        self.__dict__["password_changed_at"] = at

    @property
    def password_changed_at(self):  # type: ignore[no-untyped-def]
        return self.__dict__.get("password_changed_at")

    class PasswordResetRequested(Aggregate.Event):
        """Someone asked for a reset link for this account (the notifier mails
        it; the link works once: a reset changes `password_changed_at`)."""

        at: dt.datetime

    def request_password_reset(self, at: dt.datetime) -> None:
        if not self.deleted:
            self.trigger_event(User.PasswordResetRequested, at=at)

    class EmailVerified(Aggregate.Event):
        """The person showed they receive mail at their address."""

    def verify_email(self) -> None:
        if not self.email_verified:
            self._email_verified()

    @event(EmailVerified)
    def _email_verified(self) -> None:
        self.__dict__["email_verified"] = True

    @property
    def email_verified(self) -> bool:
        return self.__dict__.get("email_verified", False)

    class Deleted(Aggregate.Event):
        """The account is gone; its personal data is erased with its key."""

    def delete(self) -> None:
        if not self.deleted:
            self._deleted()

    @event(Deleted)
    def _deleted(self) -> None:
        self.__dict__["deleted"] = True

    @property
    def deleted(self) -> bool:
        return self.__dict__.get("deleted", False)

    class AvatarChanged(Aggregate.Event):
        """`upload_id` names a confirmed image upload; None removes the avatar."""

        upload_id: str | None

    def change_avatar(self, upload_id: str | None) -> None:
        if upload_id != self.avatar_upload_id:
            self._avatar_changed(upload_id)

    @event(AvatarChanged)
    def _avatar_changed(self, upload_id: str | None) -> None:
        self.__dict__["avatar_upload_id"] = upload_id

    @property
    def avatar_upload_id(self) -> str | None:
        return self.__dict__.get("avatar_upload_id")

    class RoleGranted(Aggregate.Event):
        role: str

    def grant_role(self, role: str) -> None:
        from domain.authorization import GRANTABLE

        if role not in GRANTABLE:
            raise InvalidInput(f"role must be one of {', '.join(sorted(GRANTABLE))}", field="role")
        if role not in self.roles:
            self._role_granted(role=role)

    @event(RoleGranted)
    def _role_granted(self, role: str) -> None:
        self.roles = self.roles | {role}

    @property
    def roles(self) -> frozenset[str]:
        return self.__dict__.get("_roles", frozenset({"member"}))

    @roles.setter
    def roles(self, value: frozenset[str]) -> None:
        self.__dict__["_roles"] = frozenset(value)

    @classmethod
    def register(cls, email: str, display_name: str, time_zone: str = "UTC") -> "User":
        return cls(
            email=check_email(email),
            display_name=check_display_name(display_name),
            time_zone=check_time_zone(time_zone),
        )


class EmailAddress(AttendWiseAggregate):
    """Claims an email for one user. Its id derives from the email, so two
    registrations of one address collide on version 1 in the event store: the
    store's uniqueness check enforces the rule, with no read-then-write race."""

    CONTEXT = "identity"

    class Claimed(Aggregate.Created):
        PERSONAL = ("email",)
        SUBJECT = "user_id"
        email: str
        user_id: uuid.UUID

    @staticmethod
    def create_id(email: str) -> uuid.UUID:  # used by eventsourcing for the id
        return uuid.uuid5(EMAIL_NAMESPACE, normalise_email(email))

    @event(Claimed)
    def __init__(self, email: str, user_id: uuid.UUID) -> None:
        self.email = email
        self.user_id = user_id
        self.released = False

    class Released(Aggregate.Event):
        """Its account was deleted: the address may be registered again."""

    class Reclaimed(Aggregate.Event):
        user_id: uuid.UUID

    def release(self) -> None:
        if not self.released:
            self._released()

    def reclaim(self, user_id: uuid.UUID) -> None:
        if not self.released:
            raise EmailTaken("this email is already registered", field="email")
        self._reclaimed(user_id=user_id)

    @event(Released)
    def _released(self) -> None:
        self.released = True

    @event(Reclaimed)
    def _reclaimed(self, user_id: uuid.UUID) -> None:
        self.user_id, self.released = user_id, False

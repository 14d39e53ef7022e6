"""The AttendWise application: command handlers on the `eventsourcing` library.

One `Application` serves every bounded context; its recorder (SQLite or
PostgreSQL, optionally behind group commit) is chosen by the composition root,
so this code is the same in embedded and full mode.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError

from commands.attendance import AttendanceHandlers
from commands.community import CommunityHandlers
from commands.enrolment import EnrolmentHandlers
from commands.identity import IdentityHandlers
from commands.notifications import NotificationHandlers
from commands.scheduling import SchedulingHandlers
from commands.messages import ChangeDisplayName, CommandContext, RegisterUser
from domain.errors import ConcurrencyConflict, EmailAlreadyRegistered, InvalidInput, NotFound
from domain.users import EmailAddress, User

APPLICATION_NAME = "AttendWise"


class AttendWise(IdentityHandlers, SchedulingHandlers, CommunityHandlers, AttendanceHandlers, EnrolmentHandlers,
                 NotificationHandlers, Application[uuid.UUID]):
    name = APPLICATION_NAME

    def __init__(self, env: dict[str, str] | None = None, recorder_decorator: Any = None,
                 credentials: Any = None, tokens: Any = None, mapper_factory: Any = None) -> None:
        # The composition root may wrap the recorder (e.g. group commit),
        # choose the mapper (personal-data encryption) and gives the stores
        # that live beside the log.
        self._recorder_decorator = recorder_decorator
        self._mapper_factory = mapper_factory
        self.credentials, self.tokens = credentials, tokens
        self.media: Any = None  # MediaStore
        self.tickets: Any = None  # TicketSigner
        self.verifier: Any = None  # FaceVerifier
        self.faces: Any = None  # FaceTemplates
        self.analyzer: Any = None  # FaceAnalyzer
        self.vault = getattr(mapper_factory, "keywords", {}).get("vault")
        super().__init__(env=env)

    def construct_mapper(self) -> Any:
        if self._mapper_factory is None:
            return super().construct_mapper()
        return self._mapper_factory(transcoder=self.construct_transcoder(), compressor=self.factory.compressor(),
                                    cipher=self.factory.cipher())

    def construct_recorder(self) -> Any:
        recorder = super().construct_recorder()
        return self._recorder_decorator(recorder) if self._recorder_decorator else recorder

    # --- handlers -------------------------------------------------------
    def register_user(self, cmd: RegisterUser, ctx: CommandContext) -> uuid.UUID:
        return self._register(cmd, ctx, reclaim=False)

    def _register(self, cmd: RegisterUser, ctx: CommandContext, reclaim: bool) -> uuid.UUID:
        """The email's claim is created at version 1, so two registrations of
        one address cannot both succeed. Only when that collides is the claim
        read: an address freed by a deleted account is claimed again (at its
        next version, just as race-safe)."""
        user = User.register(cmd.email, cmd.display_name, cmd.time_zone)
        if reclaim:
            claim = self.repository.get(EmailAddress.create_id(user.email))
            claim.reclaim(user.id)
        else:
            claim = EmailAddress(email=user.email, user_id=user.id)
        if cmd.password is not None:  # stored first (outside the log), removed if the events are refused
            self.set_password(user.id, cmd.password)
        try:
            self.save_stamped(ctx, user, claim)
        except BaseException as e:
            if cmd.password is not None:
                self.credentials.delete(str(user.id))
            if isinstance(e, ConcurrencyConflict) and not reclaim:
                try:
                    existing = self.repository.get(EmailAddress.create_id(user.email))
                except AggregateNotFoundError:
                    raise e from None
                if existing.released:
                    return self._register(cmd, ctx, reclaim=True)
                raise EmailAlreadyRegistered("this email is already registered", field="email") from e
            raise
        return user.id

    def change_display_name(self, cmd: ChangeDisplayName, ctx: CommandContext) -> int:
        """Returns the user's new version."""
        user = self.get_user(cmd.user_id)
        user.change_display_name(cmd.display_name)
        self.save_stamped(ctx, user)
        return user.version

    def get_user(self, user_id: uuid.UUID) -> User:
        try:
            user = self.repository.get(user_id)
        except AggregateNotFoundError as e:
            raise NotFound(f"no user {user_id}") from e
        if not isinstance(user, User) or user.deleted:
            raise NotFound(f"no user {user_id}")
        return user

    # --- persistence ----------------------------------------------------
    def save_stamped(self, ctx: CommandContext, *aggregates: Any) -> None:
        """Save the aggregates' new events atomically, each stamped with the
        command's actor and id. A version clash becomes `ConcurrencyConflict`."""
        processing = ProcessingEvent[uuid.UUID]()
        for aggregate in aggregates:
            for ev in aggregate.collect_events():
                check_storable(ev)
                stamp(ev, ctx)
                processing.events.append(ev)
        try:
            # `save()` would check each object against runtime Protocols
            # (~0.1 ms a command); our aggregates are known, so record directly.
            self._notify(self._record(processing))
        except IntegrityError as e:
            raise ConcurrencyConflict(
                "another command changed this first; reload and try again"
            ) from e


def event_id(originator_id: uuid.UUID, version: int) -> uuid.UUID:
    """An event's id, derived from its aggregate and version: stable across
    replays and relays, so the bus can drop duplicates by id."""
    return uuid.uuid5(originator_id, str(version))


def check_storable(ev: Any) -> None:
    """Text holding a NUL character is refused (INVALID_INPUT, naming the
    field): PostgreSQL cannot store it in a read model, so one such event
    would stop a projection for good. Everything else is stored verbatim."""
    def has_nul(value: Any) -> bool:
        if isinstance(value, str):
            return "\x00" in value
        if isinstance(value, dict):
            return any(has_nul(k) or has_nul(v) for k, v in value.items())
        return isinstance(value, (list, tuple)) and any(has_nul(v) for v in value)

    for name, value in vars(ev).items():
        if has_nul(value):
            raise InvalidInput(f"{name} may not contain NUL characters", field=name)


def stamp(ev: Any, ctx: CommandContext) -> None:
    """Attach the metadata every stored event carries. Events are frozen
    dataclasses; `meta` travels in their state and is read back with them."""
    meta = {
        "event_id": str(event_id(ev.originator_id, ev.originator_version)),
        "actor": ctx.actor,
        "command_id": str(ctx.command_id),
        "schema_version": getattr(type(ev), "class_version", 1),
    }
    object.__setattr__(ev, "meta", meta)

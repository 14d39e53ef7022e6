"""Identity handlers: passwords, login and refresh-token rotation.

Password hashes go to the `CredentialStore` (never into events); tokens come
from the `TokenService`. Both are given by the composition root."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from commands.messages import CommandContext
from domain.authorization import check_signed_in
from domain.errors import ConcurrencyConflict
from domain.identity import InvalidCredentials, RefreshTokenReused, TokenFamily, TokenInvalid, check_password
from domain.users import EmailAddress, User

RESET_TTL = dt.timedelta(hours=1)


def _password_epoch(user: User) -> str:
    """Changes whenever the password does: a reset link names the one it may replace."""
    at = user.password_changed_at
    return at.isoformat() if at else "never"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds, of the access token
    user_id: uuid.UUID


class IdentityHandlers:
    """Mixed into the `AttendWise` application."""

    repository: Any
    save_stamped: Any
    credentials: Any  # CredentialStore
    tokens: Any  # TokenService
    vault: Any  # KeyVault, or None when personal data is not encrypted

    def set_password(self, user_id: uuid.UUID, password: str) -> None:
        from adapters.credentials import hash_password

        self.credentials.set(str(user_id), hash_password(check_password(password)))

    def authenticate(self, email: str, password: str) -> uuid.UUID:
        """The user with this email and password, or `InvalidCredentials`
        (the same answer, and the same work, for an unknown email)."""
        from adapters.credentials import verify_password

        user_id = None
        try:
            claim = self.repository.get(EmailAddress.create_id(email))
            user_id = None if claim.released else claim.user_id
        except AggregateNotFoundError:
            pass
        stored = self.credentials.get(str(user_id)) if user_id else None
        if not verify_password(stored, password) or user_id is None:
            raise InvalidCredentials("email or password is wrong")
        return user_id

    def login(self, email: str, password: str, ctx: CommandContext) -> TokenPair:
        user_id = self.authenticate(email, password)
        family = TokenFamily(user_id=str(user_id), jti=uuid.uuid4().hex)
        self.save_stamped(CommandContext(actor=f"user:{user_id}", command_id=ctx.command_id), family)
        return self._pair(user_id, family)

    def refresh(self, refresh_token: str, ctx: CommandContext) -> TokenPair:
        claims = self.tokens.verify(refresh_token, "refresh")
        try:
            family: TokenFamily = self.repository.get(uuid.UUID(claims.family or ""))
        except (AggregateNotFoundError, ValueError) as e:
            raise TokenInvalid("this refresh token belongs to no login") from e
        actor = CommandContext(actor=f"user:{claims.subject}", command_id=ctx.command_id)
        user = self.repository.get(uuid.UUID(family.user_id))
        changed_at = user.password_changed_at
        if not family.revoked and (user.deleted or (changed_at is not None and family.created_on <= changed_at)):
            family.revoke("the account was deleted" if user.deleted else "the password changed after this login")
            self.save_stamped(actor, family)
        try:
            family.rotate(claims.jti, uuid.uuid4().hex)
        except RefreshTokenReused:
            self.save_stamped(actor, family)  # the revocation is recorded before the refusal
            raise
        try:
            self.save_stamped(actor, family)
        except ConcurrencyConflict as e:  # two refreshes with one token: the second is a reuse
            family = self.repository.get(family.id)
            family.revoke("one refresh token was presented twice at once")
            self.save_stamped(actor, family)
            raise RefreshTokenReused("this refresh token was already used; every token of this login is revoked") from e
        return self._pair(uuid.UUID(family.user_id), family)

    def _pair(self, user_id: uuid.UUID, family: TokenFamily) -> TokenPair:
        from adapters.tokens import ACCESS_TTL, REFRESH_TTL

        roles = tuple(sorted(self.repository.get(user_id).roles))  # a new grant shows at the next refresh
        access, _ = self.tokens.issue(str(user_id), "access", ACCESS_TTL, roles=roles)
        refresh, _ = self.tokens.issue(str(user_id), "refresh", REFRESH_TTL, family=str(family.id),
                                       jti=family.current_jti)
        return TokenPair(access, refresh, int(ACCESS_TTL.total_seconds()), user_id)

    def principal(self, access_token: str, command_id: uuid.UUID | None = None) -> CommandContext:
        """The signed-in caller as a command context (user id and roles)."""
        claims = self.tokens.verify(access_token, "access")
        return CommandContext.for_user(claims.subject, frozenset(claims.roles), command_id)

    def change_password(self, ctx: CommandContext, current: str, new: str) -> None:
        """Every login before the change stops refreshing (its tokens die within
        the access token's lifetime)."""
        from adapters.credentials import verify_password

        check_signed_in(ctx.user_id, ctx.roles)
        user = self.get_user(ctx.user_id)
        if not verify_password(self.credentials.get(str(user.id)), current):
            raise InvalidCredentials("the current password is wrong")
        self.set_password(user.id, new)
        user.record_password_change(dt.datetime.now(dt.timezone.utc))
        self.save_stamped(ctx, user)

    def email_verification_token(self, user: User) -> str | None:
        """A signed, single-purpose link token (24 hours), or None once verified."""
        if user.email_verified:
            return None
        token, _ = self.tokens.issue(str(user.id), "verify-email", dt.timedelta(hours=24))
        return token

    def request_password_reset(self, email: str, ctx: CommandContext) -> None:
        """Records the request when the address has an account; says nothing
        either way (the answer must not tell who is registered)."""
        try:
            claim = self.repository.get(EmailAddress.create_id(email))
        except AggregateNotFoundError:
            return
        if claim.released:
            return
        user = self.get_user(claim.user_id)
        user.request_password_reset(dt.datetime.now(dt.timezone.utc))
        self.save_stamped(ctx, user)

    def password_reset_token(self, user: User) -> str:
        """One hour, and once: bound to when the password last changed."""
        token, _ = self.tokens.issue(str(user.id), "reset-password", RESET_TTL, scope=_password_epoch(user))
        return token

    def reset_password(self, token: str, new_password: str, ctx: CommandContext) -> uuid.UUID:
        """Set a new password from a reset link; every earlier login ends."""
        claims = self.tokens.verify(token, "reset-password")
        user = self.get_user(uuid.UUID(claims.subject))
        if claims.scope != _password_epoch(user):
            raise TokenInvalid("this reset link was already used")
        self.set_password(user.id, new_password)
        user.record_password_change(dt.datetime.now(dt.timezone.utc))
        self.save_stamped(CommandContext(actor=f"user:{user.id}", command_id=ctx.command_id), user)
        return user.id

    def verify_email(self, token: str, ctx: CommandContext) -> uuid.UUID:
        claims = self.tokens.verify(token, "verify-email")
        user = self.get_user(uuid.UUID(claims.subject))
        user.verify_email()
        self.save_stamped(CommandContext(actor=f"user:{user.id}", command_id=ctx.command_id), user)
        return user.id

    def delete_account(self, ctx: CommandContext, password: str) -> None:
        """Records the deletion, then destroys the person's key (their personal
        data in every copy of the log becomes unreadable) and password hash.
        Safe to repeat if it was interrupted after the events were saved."""
        from adapters.credentials import verify_password

        check_signed_in(ctx.user_id, ctx.roles)
        user = self.repository.get(ctx.user_id)
        if not user.deleted:
            if not verify_password(self.credentials.get(str(user.id)), password):
                raise InvalidCredentials("the password is wrong")
            claim = self.repository.get(EmailAddress.create_id(user.email))
            user.delete()
            claim.release()
            self.save_stamped(ctx, user, claim)
        if self.vault is not None:
            self.vault.destroy(str(user.id))
        self.credentials.delete(str(user.id))

    def update_profile(self, ctx: CommandContext, display_name: str | None, time_zone: str | None) -> int:
        check_signed_in(ctx.user_id, ctx.roles)
        user = self.get_user(ctx.user_id)
        if display_name is not None and display_name != user.display_name:
            user.change_display_name(display_name)
        if time_zone is not None and time_zone != user.time_zone:
            user.change_time_zone(time_zone)
        self.save_stamped(ctx, user)
        return user.version

    def grant_role(self, user_id: uuid.UUID, role: str, ctx: CommandContext) -> None:
        from domain.authorization import PLATFORM_ADMIN, SYSTEM, Forbidden

        if not {PLATFORM_ADMIN, SYSTEM} & ctx.roles:
            raise Forbidden("only a platform admin may grant roles")
        user = self.get_user(user_id)
        user.grant_role(role)
        self.save_stamped(ctx, user)



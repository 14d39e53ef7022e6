"""Identity: passwords' rules and refresh-token families.

A login starts a token *family*; every refresh rotates it (the old refresh
token dies, a new one is issued). Presenting a refresh token that was already
rotated means it leaked: the whole family is revoked, so the thief's and the
owner's tokens both stop working and the owner logs in again.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput


class InvalidCredentials(DomainError):
    code = "INVALID_CREDENTIALS"
    status = 401


class TokenInvalid(DomainError):
    code = "TOKEN_INVALID"
    status = 401


class TokenExpired(TokenInvalid):
    code = "TOKEN_EXPIRED"


class RefreshTokenReused(TokenInvalid):
    code = "REFRESH_TOKEN_REUSED"


class TokenFamilyRevoked(TokenInvalid):
    code = "TOKEN_REVOKED"


def check_password(password: str) -> str:
    if not 10 <= len(password) <= 256:
        raise InvalidInput("password must have 10 to 256 characters", field="password")
    if password.strip() != password or len(set(password)) < 4:
        raise InvalidInput("password is too simple", field="password")
    return password


class TokenFamily(AttendWiseAggregate):
    CONTEXT = "identity"

    class Started(Aggregate.Created):
        user_id: str
        jti: str

    @event(Started)
    def __init__(self, user_id: str, jti: str) -> None:
        self.user_id, self.current_jti = user_id, jti
        self.revoked = False

    class Rotated(Aggregate.Event):
        jti: str

    class Revoked(Aggregate.Event):
        reason: str

    def rotate(self, presented_jti: str, new_jti: str) -> None:
        """Raises `TokenFamilyRevoked` for a dead family. For a token that is
        not the current one it revokes the family (an event the caller must
        save) and then raises `RefreshTokenReused`."""
        if self.revoked:
            raise TokenFamilyRevoked("this login was revoked: sign in again")
        if presented_jti != self.current_jti:
            self._revoked(reason="a rotated refresh token was presented again")
            raise RefreshTokenReused("this refresh token was already used; every token of this login is revoked")
        self._rotated(jti=new_jti)

    def revoke(self, reason: str) -> None:
        if not self.revoked:
            self._revoked(reason=reason)

    @event(Rotated)
    def _rotated(self, jti: str) -> None:
        self.current_jti = jti

    @event(Revoked)
    def _revoked(self, reason: str) -> None:
        self.revoked = True

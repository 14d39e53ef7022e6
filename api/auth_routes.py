"""Tokens: `POST /auth/token` (password and refresh grants), the JWKS, `/me`."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Deps, Principal
from api.limits import login_bucket
from commands.identity import TokenPair
from commands.messages import CommandContext
from domain.errors import DomainError, InvalidInput

router = APIRouter(tags=["identity"])


class TooManyAttempts(DomainError):
    code = "RATE_LIMITED"
    status = 429


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str
    user_id: uuid.UUID


class Me(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    display_name: str
    time_zone: str


def _out(p: TokenPair) -> TokenOut:
    return TokenOut(access_token=p.access_token, expires_in=p.expires_in, refresh_token=p.refresh_token,
                    user_id=p.user_id)


@router.post("/auth/token", response_model=TokenOut)
def token(c: Deps, grant_type: Annotated[Literal["password", "refresh_token"], Form()],
          username: Annotated[str | None, Form(max_length=254)] = None,
          password: Annotated[str | None, Form(max_length=256)] = None,
          refresh_token: Annotated[str | None, Form(max_length=4096)] = None) -> TokenOut:
    """OAuth 2 style: `grant_type=password` with `username` (the email) and
    `password`, or `grant_type=refresh_token` with `refresh_token`. Each
    refresh returns a new refresh token; the old one is dead, and presenting
    it again revokes every token of that login."""
    ctx = CommandContext(actor="anonymous")
    if grant_type == "password":
        if not username or not password:
            raise InvalidInput("the password grant needs username and password", field="username")
        if c.limiter is not None:
            wait = c.limiter.take(*login_bucket(username))
            if wait > 0:
                raise TooManyAttempts("too many sign-in attempts for this account; wait and retry",
                                      retry_after=math.ceil(wait))
        return _out(c.app.login(username, password, ctx))
    if not refresh_token:
        raise InvalidInput("the refresh_token grant needs refresh_token", field="refresh_token")
    return _out(c.app.refresh(refresh_token, ctx))


@router.get("/.well-known/jwks.json")
def jwks(c: Deps) -> dict:
    """Public keys that verify AttendWise tokens (scanners verify tickets offline with them)."""
    return c.app.tokens.keyring.jwks()


@router.get("/me", response_model=Me)
def me(who: Principal, c: Deps) -> Me:
    user = c.app.get_user(who.user_id)
    return Me(id=user.id, email=user.email, email_verified=user.email_verified, display_name=user.display_name,
              time_zone=user.time_zone)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=256)
    new_password: str = Field(min_length=10, max_length=256)


class ProfileChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=200)
    time_zone: str | None = Field(None, max_length=64)


@router.post("/me/password", status_code=204)
def change_password(body: PasswordChange, who: Principal, c: Deps) -> Response:
    """Ends every login made before the change: their refresh tokens stop working
    (access tokens expire within 15 minutes). Sign in again with the new password."""
    c.app.change_password(who, body.current_password, body.new_password)
    return Response(status_code=204)


@router.patch("/me", response_model=Me)
def update_profile(body: ProfileChange, who: Principal, c: Deps) -> Me:
    c.app.update_profile(who, body.display_name, body.time_zone)
    return me(who, c)


class AccountDeletion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=256)


@router.delete("/me", status_code=204)
def delete_account(body: AccountDeletion, who: Principal, c: Deps) -> Response:
    """Deletes the account: the log keeps its events, but the personal data in
    them can no longer be read by anyone (its key is destroyed)."""
    c.app.delete_account(who, body.password)
    return Response(status_code=204)


@router.get("/auth/verify-email", status_code=204)
def verify_email(token: str, c: Deps) -> Response:
    """The link in the verification mail: the token proves the address."""
    c.app.verify_email(token, CommandContext(actor="anonymous"))
    return Response(status_code=204)

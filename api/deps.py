"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.bootstrap import Container
from commands.messages import CommandContext
from domain.identity import TokenInvalid


def get_container(request: Request) -> Container:
    return request.app.state.container


Deps = Annotated[Container, Depends(get_container)]

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/token")


def principal(c: Deps, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> CommandContext:
    """The signed-in caller (401 without a valid access token)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise TokenInvalid("sign in: send Authorization: Bearer <access token>")
    return c.app.principal(credentials.credentials)


Principal = Annotated[CommandContext, Depends(principal)]

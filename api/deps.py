"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.bootstrap import Container
from domain.identity import TokenInvalid


def get_container(request: Request) -> Container:
    return request.app.state.container


Deps = Annotated[Container, Depends(get_container)]

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/token")


def current_user(c: Deps, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> uuid.UUID:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise TokenInvalid("sign in: send Authorization: Bearer <access token>")
    return c.app.current_user(credentials.credentials)


CurrentUser = Annotated[uuid.UUID, Depends(current_user)]

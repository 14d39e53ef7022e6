"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.bootstrap import Container


def get_container(request: Request) -> Container:
    return request.app.state.container


Deps = Annotated[Container, Depends(get_container)]

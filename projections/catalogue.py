"""Every projection AttendWise runs, by name."""

from __future__ import annotations

from projections.base import Projection
from projections.scheduling import SchedulingProjection
from projections.users import UsersProjection


def all_projections() -> dict[str, Projection]:
    return {p.name: p for p in (UsersProjection(), SchedulingProjection())}

"""Every read-model projection AttendWise runs, by name. (The feed graph is
wired beside them in `api/bootstrap.py`: it has its own store.)"""

from __future__ import annotations

from projections.attendance import AttendanceProjection
from projections.base import Projection
from projections.community import CommunityProjection
from projections.notifications import NotificationsProjection
from projections.scheduling import SchedulingProjection
from projections.users import UsersProjection


def all_projections() -> dict[str, Projection]:
    return {p.name: p for p in (UsersProjection(), SchedulingProjection(), CommunityProjection(),
                                AttendanceProjection(), NotificationsProjection())}

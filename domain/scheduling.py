"""Scheduling: a host's event *series* and the *sessions* it generates.

("Event" in this codebase means a domain event, a recorded fact. What people
put in their calendars is a `Series` of `Session`s.)
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput
from domain.recurrence import (HORIZON, Occurrence, Recurrence, check_recurrence, describe, expand,
                               resolve_local)

VISIBILITIES = ("public", "members")


class SessionCancelled(DomainError):
    code = "SESSION_CANCELLED"
    status = 409


class SessionInPast(DomainError):
    code = "SESSION_IN_PAST"
    status = 409


class SeriesEnded(DomainError):
    code = "SERIES_ENDED"
    status = 409


# ------------------------------------------------------------------ rules
def check_title(title: str) -> str:
    title = " ".join(title.split())
    if not 1 <= len(title) <= 200:
        raise InvalidInput("title must have 1 to 200 characters", field="title")
    return title


def check_capacity(capacity: int | None) -> int | None:
    if capacity is not None and not 1 <= capacity <= 100_000:
        raise InvalidInput("capacity must be between 1 and 100,000 (or empty: unlimited)", field="capacity")
    return capacity


def check_location(location: dict[str, Any] | None) -> dict[str, Any] | None:
    """{name, address, lat, lon}; every part optional, coordinates checked."""
    if location is None:
        return None
    unknown = set(location) - {"name", "address", "lat", "lon"}
    if unknown:
        raise InvalidInput(f"unknown location fields {sorted(unknown)}", field="location")
    lat, lon = location.get("lat"), location.get("lon")
    if (lat is None) != (lon is None):
        raise InvalidInput("give both lat and lon, or neither", field="location")
    if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidInput("lat must be within ±90 and lon within ±180", field="location")
    for k in ("name", "address"):
        if location.get(k) is not None and len(str(location[k])) > 300:
            raise InvalidInput(f"location {k} is too long", field="location")
    return {k: location.get(k) for k in ("name", "address", "lat", "lon")}


def check_visibility(visibility: str) -> str:
    if visibility not in VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(VISIBILITIES)}", field="visibility")
    return visibility


def check_hosts(host_ids: list[str]) -> list[str]:
    if not host_ids:
        raise InvalidInput("a series needs at least one host", field="host_ids")
    try:
        return sorted({str(uuid.UUID(h)) for h in host_ids})
    except ValueError as e:
        raise InvalidInput("host ids must be UUIDs", field="host_ids") from e


def check_density(rec: Recurrence, now: dt.datetime) -> None:
    """A bounded rule may give at most the limit; an open-ended one at most
    the limit within one horizon from its first session (or from now), so the
    horizon job can never be asked for more later."""
    if not rec.open_ended:
        expand(rec)
        return
    begin = max(now, resolve_local(rec.start, rec.zone))
    expand(rec, begin + HORIZON)


def session_id(series_id: uuid.UUID, original_start: dt.datetime) -> uuid.UUID:
    """A session's id derives from its series and its original local start:
    generating an occurrence twice can only ever name the same session."""
    return uuid.uuid5(series_id, original_start.isoformat())


# ------------------------------------------------------------------ series
class Series(AttendWiseAggregate):
    CONTEXT = "scheduling"

    class Created(Aggregate.Created):
        title: str
        community_id: str | None
        host_ids: list[str]
        start: dt.datetime
        time_zone: str
        duration_minutes: int
        rule: str | None
        exdates: list[dt.datetime]
        rdates: list[dt.datetime]
        location: dict[str, Any] | None
        capacity: int | None
        visibility: str
        generated_until: dt.datetime | None
        description: str

    @event(Created)
    def __init__(self, title: str, community_id: str | None, host_ids: list[str], start: dt.datetime,
                 time_zone: str, duration_minutes: int, rule: str | None, exdates: list[dt.datetime],
                 rdates: list[dt.datetime], location: dict[str, Any] | None, capacity: int | None,
                 visibility: str, generated_until: dt.datetime | None, description: str) -> None:
        self.title, self.community_id, self.host_ids = title, community_id, host_ids
        self.start, self.time_zone, self.duration_minutes = start, time_zone, duration_minutes
        self.rule, self.exdates, self.rdates = rule, exdates, rdates
        self.location, self.capacity, self.visibility = location, capacity, visibility
        self.generated_until, self.description = generated_until, description
        self.ends_before: dt.datetime | None = None  # set when split: "this and following" moved on
        self.continued_by: str | None = None

    @property
    def recurrence(self) -> Recurrence:
        return Recurrence(self.start, self.time_zone, dt.timedelta(minutes=self.duration_minutes), self.rule,
                          tuple(self.exdates), tuple(self.rdates))

    def occurrences(self, until: dt.datetime | None = None) -> list[Occurrence]:
        """What the rule generates up to the horizon (or `until`, if later),
        less what a split moved to another series."""
        horizon = max(filter(None, [self.generated_until, until]), default=None)
        out = expand(self.recurrence, horizon if self.recurrence.open_ended else None)
        return [o for o in out if self.ends_before is None or o.original_start < self.ends_before]

    @staticmethod
    def plan(title: str, community_id: str | None, host_ids: list[str], recurrence: Recurrence,
             location: dict[str, Any] | None, capacity: int | None, visibility: str,
             now: dt.datetime) -> dict[str, Any]:
        """Checked arguments for a new series (raises `InvalidInput`)."""
        rec = check_recurrence(recurrence)
        generated_until = now + HORIZON if rec.open_ended else None
        check_density(rec, now)  # refuses more than the limit before anything is written
        return dict(title=check_title(title), community_id=community_id, host_ids=check_hosts(host_ids),
                    start=rec.start, time_zone=rec.time_zone, duration_minutes=int(rec.duration.total_seconds() // 60),
                    rule=rec.rule, exdates=list(rec.exdates), rdates=list(rec.rdates),
                    location=check_location(location), capacity=check_capacity(capacity),
                    visibility=check_visibility(visibility), generated_until=generated_until,
                    description=describe(rec))

    class RuleChanged(Aggregate.Event):
        start: dt.datetime
        time_zone: str
        duration_minutes: int
        rule: str | None
        exdates: list[dt.datetime]
        rdates: list[dt.datetime]
        description: str

    def change_rule(self, recurrence: Recurrence, now: dt.datetime) -> None:
        self.check_open()
        rec = check_recurrence(recurrence)
        check_density(rec, now)
        self._rule_changed(start=rec.start, time_zone=rec.time_zone,
                           duration_minutes=int(rec.duration.total_seconds() // 60), rule=rec.rule,
                           exdates=list(rec.exdates), rdates=list(rec.rdates), description=describe(rec))
        if rec.open_ended and self.generated_until is None:
            self.extend_horizon(now + HORIZON)

    @event(RuleChanged)
    def _rule_changed(self, start: dt.datetime, time_zone: str, duration_minutes: int, rule: str | None,
                      exdates: list[dt.datetime], rdates: list[dt.datetime], description: str) -> None:
        self.start, self.time_zone, self.duration_minutes = start, time_zone, duration_minutes
        self.rule, self.exdates, self.rdates, self.description = rule, exdates, rdates, description

    class HorizonExtended(Aggregate.Event):
        generated_until: dt.datetime

    def extend_horizon(self, until: dt.datetime) -> None:
        if self.recurrence.open_ended and (self.generated_until is None or until > self.generated_until):
            self._horizon_extended(generated_until=until)

    @event(HorizonExtended)
    def _horizon_extended(self, generated_until: dt.datetime) -> None:
        self.generated_until = generated_until

    class Split(Aggregate.Event):
        """From `at` (an occurrence's original start) on, `continued_by` carries the series."""

        at: dt.datetime
        continued_by: str

    def split(self, at: dt.datetime, continued_by: uuid.UUID) -> None:
        self.check_open()
        self._split(at=at, continued_by=str(continued_by))

    @event(Split)
    def _split(self, at: dt.datetime, continued_by: str) -> None:
        self.ends_before, self.continued_by = at, continued_by

    def check_open(self) -> None:
        if self.continued_by is not None:
            raise SeriesEnded("this series was split; change the series that continues it",
                              continued_by=self.continued_by)


# ------------------------------------------------------------------ session
class Session(AttendWiseAggregate):
    CONTEXT = "scheduling"

    class Scheduled(Aggregate.Created):
        series_id: str
        original_start: dt.datetime
        start: dt.datetime
        end: dt.datetime
        time_zone: str
        title: str
        community_id: str | None
        host_ids: list[str]
        location: dict[str, Any] | None
        capacity: int | None
        visibility: str

    @staticmethod
    def create_id(series_id: str, original_start: dt.datetime, **_: Any) -> uuid.UUID:
        return session_id(uuid.UUID(series_id), original_start)

    @event(Scheduled)
    def __init__(self, series_id: str, original_start: dt.datetime, start: dt.datetime, end: dt.datetime,
                 time_zone: str, title: str, community_id: str | None, host_ids: list[str],
                 location: dict[str, Any] | None, capacity: int | None, visibility: str) -> None:
        self.series_id, self.original_start = series_id, original_start
        self.start, self.end, self.time_zone = start, end, time_zone
        self.title, self.community_id, self.host_ids = title, community_id, host_ids
        self.location, self.capacity, self.visibility = location, capacity, visibility
        self.cancelled = False
        self.attendance = 0

    @classmethod
    def for_occurrence(cls, series: Series, occ: Occurrence) -> "Session":
        return cls(series_id=str(series.id), original_start=occ.original_start, start=occ.start, end=occ.end,
                   time_zone=series.time_zone, title=series.title, community_id=series.community_id,
                   host_ids=series.host_ids, location=series.location, capacity=series.capacity,
                   visibility=series.visibility)

    class Changed(Aggregate.Event):
        start: dt.datetime
        end: dt.datetime
        location: dict[str, Any] | None
        capacity: int | None

    def change(self, now: dt.datetime, start_local: dt.datetime | None = None,
               location: dict[str, Any] | None | str = "unchanged", capacity: int | None | str = "unchanged") -> None:
        """Move this one occurrence, or change its place or capacity."""
        self.check_changeable(now)
        start, end = self.start, self.end
        if start_local is not None:
            if start_local.tzinfo is not None:
                raise InvalidInput("start is a local wall time: give it without an offset", field="start")
            start = resolve_local(start_local, zoneinfo.ZoneInfo(self.time_zone))
            end = start + (self.end - self.start)
        self._changed(start=start, end=end,
                      location=self.location if location == "unchanged" else check_location(location),  # type: ignore[arg-type]
                      capacity=self.capacity if capacity == "unchanged" else check_capacity(capacity))  # type: ignore[arg-type]

    @event(Changed)
    def _changed(self, start: dt.datetime, end: dt.datetime, location: dict[str, Any] | None,
                 capacity: int | None) -> None:
        self.start, self.end, self.location, self.capacity = start, end, location, capacity

    class Cancelled(Aggregate.Event):
        reason: str

    def cancel(self, reason: str, now: dt.datetime) -> None:
        self.check_changeable(now)
        self._cancelled(reason=" ".join(reason.split())[:500] or "cancelled")

    @event(Cancelled)
    def _cancelled(self, reason: str) -> None:
        self.cancelled = True

    class AttendanceRecorded(Aggregate.Event):
        """The first person attended: from then on no rule change may remove
        this session. (Recorded once, so check-ins do not contend on the session.)"""

    def record_attendance(self) -> None:
        if not self.attendance:
            self._attendance_recorded()

    @event(AttendanceRecorded)
    def _attendance_recorded(self) -> None:
        self.attendance += 1

    class CheckInPolicySet(Aggregate.Event):
        """How members check in: `face` (QR ticket and a matching face) or
        `qr` (ticket only), from `opens_minutes` before the start until
        `closes_minutes` after the end."""

        policy: str
        opens_minutes: int
        closes_minutes: int

    def set_checkin_policy(self, policy: str, opens_minutes: int, closes_minutes: int) -> None:
        from domain.attendance import check_policy

        if not (0 <= opens_minutes <= 24 * 60 and 0 <= closes_minutes <= 24 * 60):
            raise InvalidInput("the window opens and closes at most 24 hours around the session", field="window")
        self._checkin_policy_set(check_policy(policy), opens_minutes, closes_minutes)

    @event(CheckInPolicySet)
    def _checkin_policy_set(self, policy: str, opens_minutes: int, closes_minutes: int) -> None:
        self.__dict__["checkin_policy"] = (policy, opens_minutes, closes_minutes)

    @property
    def checkin_policy(self) -> tuple[str, int, int]:
        """(policy, minutes open before the start, minutes open after the end)."""
        return self.__dict__.get("checkin_policy", ("face", 60, 60))

    @property
    def checkin_window(self) -> tuple[dt.datetime, dt.datetime]:
        _, before, after = self.checkin_policy
        return self.start - dt.timedelta(minutes=before), self.end + dt.timedelta(minutes=after)

    def check_changeable(self, now: dt.datetime) -> None:
        if self.cancelled:
            raise SessionCancelled("this session is cancelled")
        if self.start <= now:
            raise SessionInPast("this session has already started; its record is kept as it was")

    def removable_by_rule_change(self, now: dt.datetime) -> str | None:
        """Why a rule change must keep this session (None: it may cancel it)."""
        if self.cancelled:
            return "already cancelled"
        if self.attendance:
            return "has check-ins"
        if self.start <= now:
            return "already started"
        return None

"""Command API for scheduling: series and sessions, and iCalendar feeds."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.deps import Deps, Principal
from api.ical import calendar
from commands.messages import (CancelSession, ChangeSeriesRule, ChangeSession, ChangeThisAndFollowing,
                               ScheduleSeries)
from commands.scheduling import ScheduleOutcome
from domain.errors import InvalidInput, NotFound

router = APIRouter(tags=["scheduling"])
MAX_DATES = 1000


def _naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        raise ValueError("a local wall time, without offset (the series' time_zone says where)")
    return value


LocalTime = Annotated[dt.datetime, AfterValidator(_naive)]


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=300)
    address: str | None = Field(None, max_length=300)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: LocalTime = Field(description="First session's local wall time, e.g. 2026-01-06T18:00",
                             examples=["2026-01-06T18:00:00"])
    time_zone: str = Field(max_length=64, examples=["Europe/Berlin"])
    duration_minutes: int = Field(ge=1, le=7 * 24 * 60)
    rule: str | None = Field(None, max_length=500, description="RFC 5545 RRULE value",
                             examples=["FREQ=WEEKLY;BYDAY=TU;COUNT=4"])
    exdates: list[LocalTime] = Field(default_factory=list, max_length=MAX_DATES)
    rdates: list[LocalTime] = Field(default_factory=list, max_length=MAX_DATES)


class SeriesCreate(RuleIn):
    title: str = Field(max_length=200)
    host_ids: list[uuid.UUID] = Field(min_length=1, max_length=50)
    community_id: uuid.UUID | None = None
    location: Location | None = None
    capacity: int | None = Field(None, ge=1, le=100_000)
    visibility: Literal["public", "members"] = "public"


class SessionChange(BaseModel):
    """Send only what changes; `null` empties location or capacity."""

    model_config = ConfigDict(extra="forbid")
    start: LocalTime | None = None
    location: Location | None = None
    capacity: int | None = Field(None, ge=1, le=100_000)


class Cancellation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class ThisAndFollowing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_time: dt.time | None = Field(None, description="new local time of day")
    duration_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)
    rule: str | None = Field(None, max_length=500)
    title: str | None = Field(None, max_length=200)
    location: Location | None = None
    capacity: int | None = Field(None, ge=1, le=100_000)


class Outcome(BaseModel):
    series_id: uuid.UUID
    description: str
    added: int
    cancelled: list[uuid.UUID]
    kept: dict[str, str]
    new_series_id: uuid.UUID | None = None


def _outcome(o: ScheduleOutcome) -> Outcome:
    return Outcome(series_id=o.series_id, description=o.description, added=len(o.added), cancelled=o.cancelled,
                   kept=o.kept, new_series_id=o.new_series_id)


def _dump(m: BaseModel | None) -> dict[str, Any] | None:
    return None if m is None else m.model_dump()


@router.post("/series", status_code=201, response_model=Outcome)
def schedule_series(body: SeriesCreate, c: Deps, who: Principal) -> Outcome:
    cmd = ScheduleSeries(title=body.title, host_ids=[str(h) for h in body.host_ids], start=body.start,
                         time_zone=body.time_zone, duration_minutes=body.duration_minutes, rule=body.rule,
                         exdates=body.exdates, rdates=body.rdates,
                         community_id=str(body.community_id) if body.community_id else None,
                         location=_dump(body.location), capacity=body.capacity, visibility=body.visibility)
    return _outcome(c.app.schedule_series(cmd, who, c.clock()))


@router.put("/series/{series_id}/rule", response_model=Outcome)
def change_series_rule(series_id: uuid.UUID, body: RuleIn, c: Deps, who: Principal) -> Outcome:
    cmd = ChangeSeriesRule(series_id, body.start, body.time_zone, body.duration_minutes, body.rule,
                           body.exdates, body.rdates)
    return _outcome(c.app.change_series_rule(cmd, who, c.clock()))


@router.patch("/sessions/{session_id}", status_code=204)
def change_session(session_id: uuid.UUID, body: SessionChange, c: Deps, who: Principal) -> Response:
    sent = body.model_fields_set
    if not sent:
        raise InvalidInput("nothing to change: send start, location or capacity")
    cmd = ChangeSession(session_id, start=body.start, location=_dump(body.location), capacity=body.capacity,
                        clear_location="location" in sent and body.location is None,
                        clear_capacity="capacity" in sent and body.capacity is None)
    c.app.change_session(cmd, who, c.clock())
    return Response(status_code=204)


@router.post("/sessions/{session_id}/cancel", status_code=204)
def cancel_session(session_id: uuid.UUID, body: Cancellation, c: Deps, who: Principal) -> Response:
    c.app.cancel_session(CancelSession(session_id, body.reason), who, c.clock())
    return Response(status_code=204)


@router.post("/sessions/{session_id}/this-and-following", status_code=201, response_model=Outcome)
def change_this_and_following(session_id: uuid.UUID, body: ThisAndFollowing, c: Deps, who: Principal) -> Outcome:
    cmd = ChangeThisAndFollowing(session_id, start_time=body.start_time, duration_minutes=body.duration_minutes,
                                 rule=body.rule, title=body.title, location=_dump(body.location),
                                 capacity=body.capacity)
    return _outcome(c.app.change_this_and_following(cmd, who, c.clock()))


ICS = {200: {"content": {"text/calendar": {}}, "description": "an iCalendar feed"}}


@router.get("/communities/{community_id}/calendar.ics", response_class=Response, responses=ICS)
def community_calendar(community_id: uuid.UUID, c: Deps) -> Response:
    """A public community's public sessions (a calendar URL carries no sign-in,
    so a private community has none)."""
    community = c.readmodels.get("communities", str(community_id))
    if community is not None and community["visibility"] != "public":
        raise NotFound(f"no public community {community_id}")
    rows = c.readmodels.rows("sessions", where={"community_id": str(community_id), "visibility": "public"},
                             order_by="sort_key", limit=5000)
    return Response(calendar(f"AttendWise community {community_id}", rows, c.clock()), media_type="text/calendar")


@router.get("/users/{user_id}/calendar.ics", response_class=Response, responses=ICS)
def user_calendar(user_id: uuid.UUID, c: Deps) -> Response:
    hosted = c.readmodels.rows("session_hosts", where={"user_id": str(user_id)}, order_by="sort_key", limit=5000)
    rows = [r for r in (c.readmodels.get("sessions", h["session_id"]) for h in hosted) if r]
    return Response(calendar(f"AttendWise sessions of {user_id}", rows, c.clock()), media_type="text/calendar")

"""Scheduling handlers: series and their sessions. Each edit is events on the
series and sessions it touches, saved atomically; bad input appends nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from commands.loading import Loader
from commands.messages import (CancelSession, ChangeSeriesRule, ChangeSession, ChangeThisAndFollowing,
                               CommandContext, ScheduleSeries)
from domain.authorization import check_is_host
from domain.communities import Community, Membership, check_community_host, membership_id
from domain.errors import InvalidInput, NotFound
from domain.recurrence import HORIZON, Recurrence, check_recurrence, rule_parts
from domain.scheduling import Series, Session, session_id


@dataclass
class ScheduleOutcome:
    """What a scheduling command did, for the caller to show."""

    series_id: uuid.UUID
    description: str
    added: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # session id -> why it was kept
    new_series_id: uuid.UUID | None = None


class SchedulingHandlers(Loader):
    """Mixed into the `AttendWise` application."""

    repository: Any
    save_stamped: Any

    def schedule_series(self, cmd: ScheduleSeries, ctx: CommandContext, now: dt.datetime) -> ScheduleOutcome:
        check_is_host(ctx.user_id, ctx.roles, [str(h) for h in cmd.host_ids])  # a host schedules for themselves
        if cmd.community_id is not None:  # in a community: its hosts and admins schedule
            community = self._get(uuid.UUID(str(cmd.community_id)), Community, "community")
            check_community_host(ctx.user_id, ctx.roles, self._find(membership_id(community.id, ctx.user_id), Membership))
        rec = Recurrence(cmd.start, cmd.time_zone, dt.timedelta(minutes=cmd.duration_minutes), cmd.rule,
                         tuple(cmd.exdates), tuple(cmd.rdates))
        series = Series(**Series.plan(cmd.title, cmd.community_id, cmd.host_ids, rec, cmd.location,
                                      cmd.capacity, cmd.visibility, now))
        sessions = [Session.for_occurrence(series, o) for o in series.occurrences()]
        self.save_stamped(ctx, series, *sessions)
        return ScheduleOutcome(series.id, series.description, added=[s.id for s in sessions])

    def get_series(self, series_id: uuid.UUID) -> Series:
        return self._get(series_id, Series, "series")

    def get_session(self, sid: uuid.UUID) -> Session:
        return self._get(sid, Session, "session")

    def _existing_sessions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Session]:
        found = {}
        for sid in ids:
            try:
                found[sid] = self.repository.get(sid)
            except AggregateNotFoundError:
                pass
        return found

    @staticmethod
    def _retire(sessions: dict[uuid.UUID, Session], reason: str, now: dt.datetime,
                out: ScheduleOutcome) -> list[Session]:
        """Cancel the sessions an edit no longer generates, except those a
        rule change must keep (with check-ins, started, already cancelled),
        which `out.kept` lists with the reason. Returns the cancelled ones."""
        cancelled = []
        for sid, session in sessions.items():
            why = session.removable_by_rule_change(now)
            if why:
                out.kept[str(sid)] = why
            else:
                session.cancel(reason, now)
                cancelled.append(session)
                out.cancelled.append(sid)
        return cancelled

    def change_session(self, cmd: ChangeSession, ctx: CommandContext, now: dt.datetime) -> None:
        session = self.get_session(cmd.session_id)
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        session.change(
            now, start_local=cmd.start,
            location=None if cmd.clear_location else (cmd.location if cmd.location is not None else "unchanged"),
            capacity=None if cmd.clear_capacity else (cmd.capacity if cmd.capacity is not None else "unchanged"))
        self.save_stamped(ctx, session)

    def cancel_session(self, cmd: CancelSession, ctx: CommandContext, now: dt.datetime) -> None:
        session = self.get_session(cmd.session_id)
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        session.cancel(cmd.reason, now)
        self.save_stamped(ctx, session)

    def change_series_rule(self, cmd: ChangeSeriesRule, ctx: CommandContext, now: dt.datetime) -> ScheduleOutcome:
        series = self.get_series(cmd.series_id)
        check_is_host(ctx.user_id, ctx.roles, series.host_ids)
        before = {o.original_start: o for o in series.occurrences()}
        series.change_rule(Recurrence(cmd.start, cmd.time_zone, dt.timedelta(minutes=cmd.duration_minutes),
                                      cmd.rule, tuple(cmd.exdates), tuple(cmd.rdates)), now)
        after = {o.original_start: o for o in series.occurrences()}  # up to the series' own horizon
        out = ScheduleOutcome(series.id, series.description)
        changed: list[Any] = [series]
        gone = [session_id(series.id, k) for k in before if k not in after]
        changed += self._retire(self._existing_sessions(gone), "the series' rule changed", now, out)
        new = [o for k, o in after.items() if k not in before and o.start > now]
        existing = self._existing_sessions([session_id(series.id, o.original_start) for o in new])
        for occ in new:
            sid = session_id(series.id, occ.original_start)
            if sid in existing:  # generated before and cancelled since: a person's cancellation stands
                out.kept[str(sid)] = "cancelled earlier"
                continue
            s = Session.for_occurrence(series, occ)
            changed.append(s)
            out.added.append(s.id)
        self.save_stamped(ctx, *changed)
        return out

    def change_this_and_following(self, cmd: ChangeThisAndFollowing, ctx: CommandContext,
                                  now: dt.datetime) -> ScheduleOutcome:
        session = self.get_session(cmd.session_id)
        old = self.get_series(uuid.UUID(session.series_id))
        check_is_host(ctx.user_id, ctx.roles, old.host_ids)
        session.check_changeable(now)
        old.check_open()
        at = session.original_start
        rule = cmd.rule if cmd.rule is not None else _remaining_rule(old, at)
        start = dt.datetime.combine(at.date(), cmd.start_time or at.time())
        rec = Recurrence(start, old.time_zone, dt.timedelta(minutes=cmd.duration_minutes or old.duration_minutes),
                         rule, tuple(d for d in old.exdates if d >= at), tuple(d for d in old.rdates if d >= at))
        check_recurrence(rec)
        following = [o for o in old.occurrences() if o.original_start >= at]
        new = Series(**Series.plan(cmd.title or old.title, old.community_id, old.host_ids, rec,
                                   cmd.location if cmd.location is not None else old.location,
                                   cmd.capacity if cmd.capacity is not None else old.capacity,
                                   old.visibility, now))
        old.split(at, new.id)
        out = ScheduleOutcome(old.id, new.description, new_series_id=new.id)
        changed: list[Any] = [old, new]
        existing = self._existing_sessions([session_id(old.id, o.original_start) for o in following])
        changed += self._retire(existing, "moved to the series that continues this one", now, out)
        for occ in new.occurrences():
            if occ.start > now:
                s = Session.for_occurrence(new, occ)
                changed.append(s)
                out.added.append(s.id)
        self.save_stamped(ctx, *changed)
        return out

    def extend_horizon(self, series_id: uuid.UUID, ctx: CommandContext, now: dt.datetime) -> int:
        """Generate an open-ended series' sessions up to `now + HORIZON`;
        returns how many were added. Sessions that exist (cancelled ones too)
        are never generated again."""
        series = self.get_series(series_id)
        check_is_host(ctx.user_id, ctx.roles, series.host_ids)
        if not series.recurrence.open_ended or series.continued_by:
            return 0
        until = now + HORIZON
        if series.generated_until and until <= series.generated_until:
            return 0
        known = {o.original_start for o in series.occurrences()}
        series.extend_horizon(until)
        fresh = [o for o in series.occurrences() if o.original_start not in known and o.start > now]
        existing = self._existing_sessions([session_id(series.id, o.original_start) for o in fresh])
        sessions = [Session.for_occurrence(series, o) for o in fresh
                    if session_id(series.id, o.original_start) not in existing]
        self.save_stamped(ctx, series, *sessions)
        return len(sessions)


def _remaining_rule(series: Series, at: dt.datetime) -> str | None:
    """The old rule, from `at` on: a COUNT shrinks by the occurrences before `at`."""
    if not series.rule:
        return None
    parts = rule_parts(series.rule)
    if "COUNT" in parts:
        before = sum(1 for o in series.occurrences() if o.original_start < at)
        remaining = int(parts["COUNT"]) - before
        if remaining < 1:
            raise InvalidInput("no occurrences follow this session", field="session_id")
        parts["COUNT"] = str(remaining)
    return ";".join(f"{k}={v}" for k, v in parts.items())

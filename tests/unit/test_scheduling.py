"""Series and sessions, the way calendar users expect them to behave.
In-memory event store (the library's POPO recorder), frozen clock."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.application import AttendWise
from commands.messages import (CancelSession, ChangeSeriesRule, ChangeSession, ChangeThisAndFollowing,
                               CommandContext, ScheduleSeries)
from domain.errors import InvalidInput
from domain.recurrence import HORIZON, UTC
from domain.scheduling import Session, SessionCancelled, SessionInPast, SeriesEnded, session_id

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=UTC)
HOST = str(uuid.UUID(int=7))
CTX = CommandContext.for_user(HOST)


def app() -> AttendWise:
    return AttendWise(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def weekly(a: AttendWise, rule: str = "FREQ=WEEKLY;BYDAY=TU;COUNT=4", **kw: object):  # type: ignore[no-untyped-def]
    cmd = ScheduleSeries("Run club", [HOST], dt.datetime(2026, 1, 6, 18), "Europe/Berlin", 60, rule, **kw)  # type: ignore[arg-type]
    return a.schedule_series(cmd, CTX, NOW)


def sessions_of(a: AttendWise, series_id: uuid.UUID) -> list[Session]:
    """The sessions a series' occurrences have (edits add none in the past)."""
    series = a.get_series(series_id)
    found = a._existing_sessions([session_id(series.id, o.original_start) for o in series.occurrences()])
    return list(found.values())


def log_size(a: AttendWise) -> int:
    return a.recorder.max_notification_id() or 0


def test_creating_a_series_records_the_series_and_one_event_per_session() -> None:
    a = app()
    out = weekly(a, location={"name": "Park", "lat": 52.5, "lon": 13.4}, capacity=12)
    assert out.description == "Every Tuesday at 18:00, 4 times" and len(out.added) == 4
    assert log_size(a) == 5
    s = a.get_session(out.added[0])
    assert (s.start, s.capacity, s.location["name"]) == (dt.datetime(2026, 1, 6, 17, tzinfo=UTC), 12, "Park")
    assert out.added == [session_id(out.series_id, dt.datetime(2026, 1, d, 18)) for d in (6, 13, 20, 27)]


def test_change_one_occurrence_moves_only_it() -> None:
    a = app()
    out = weekly(a)
    a.change_session(ChangeSession(out.added[1], start=dt.datetime(2026, 1, 14, 19), capacity=5), CTX, NOW)
    moved, other = a.get_session(out.added[1]), a.get_session(out.added[2])
    assert moved.start == dt.datetime(2026, 1, 14, 18, tzinfo=UTC) and moved.capacity == 5
    assert moved.end - moved.start == dt.timedelta(hours=1)
    assert moved.original_start == dt.datetime(2026, 1, 13, 18)  # identity unchanged
    assert other.start == dt.datetime(2026, 1, 20, 17, tzinfo=UTC) and other.capacity is None


def test_cancel_one_occurrence_and_it_stays_cancelled() -> None:
    a = app()
    out = weekly(a)
    a.cancel_session(CancelSession(out.added[0], "Rain"), CTX, NOW)
    assert a.get_session(out.added[0]).cancelled
    with pytest.raises(SessionCancelled):
        a.cancel_session(CancelSession(out.added[0], "again"), CTX, NOW)
    with pytest.raises(SessionCancelled):
        a.change_session(ChangeSession(out.added[0], capacity=3), CTX, NOW)


def test_past_sessions_cannot_be_changed() -> None:
    a = app()
    out = weekly(a)
    later = dt.datetime(2026, 1, 7, tzinfo=UTC)
    with pytest.raises(SessionInPast):
        a.cancel_session(CancelSession(out.added[0]), CTX, later)


def test_change_this_and_all_following_splits_the_series() -> None:
    a = app()
    out = weekly(a)
    split = a.change_this_and_following(ChangeThisAndFollowing(out.added[2], start_time=dt.time(19, 30)), CTX, NOW)
    assert split.cancelled == out.added[2:] and len(split.added) == 2
    assert split.description == "Every Tuesday at 19:30, 2 times"
    old = a.get_series(out.series_id)
    assert old.continued_by == str(split.new_series_id) and len(old.occurrences()) == 2
    new_sessions = sessions_of(a, split.new_series_id)
    assert [s.start.astimezone(dt.timezone(dt.timedelta(hours=1))).strftime("%d %H:%M") for s in new_sessions] == \
        ["20 19:30", "27 19:30"]
    assert [a.get_session(s).cancelled for s in out.added] == [False, False, True, True]
    with pytest.raises(SeriesEnded):  # the old series is closed for edits
        a.change_this_and_following(ChangeThisAndFollowing(out.added[1], start_time=dt.time(8)), CTX, NOW)


def test_changing_the_rule_cancels_what_no_longer_occurs_adds_what_does_and_keeps_attended() -> None:
    a = app()
    out = weekly(a, rule="FREQ=WEEKLY;BYDAY=TU;COUNT=6")
    attended = a.get_session(out.added[3])
    attended.record_attendance()  # (check-ins will do this)
    a.save_stamped(CTX, attended)
    later = dt.datetime(2026, 1, 10, tzinfo=UTC)  # the first session is in the past now
    change = ChangeSeriesRule(out.series_id, dt.datetime(2026, 1, 6, 18), "Europe/Berlin", 60,
                              "FREQ=WEEKLY;BYDAY=TH;COUNT=6")
    result = a.change_series_rule(change, CTX, later)
    assert result.kept == {str(out.added[0]): "already started", str(out.added[3]): "has check-ins"}
    assert set(result.cancelled) == {out.added[i] for i in (1, 2, 4, 5)}
    thursdays = sorted(a.get_session(s).start.date() for s in result.added)
    assert thursdays == [dt.date(2026, 1, 15), dt.date(2026, 1, 22), dt.date(2026, 1, 29), dt.date(2026, 2, 5),
                         dt.date(2026, 2, 12)]  # the 8 January Thursday is already past: not added
    assert not a.get_session(out.added[3]).cancelled


def test_bad_input_appends_nothing() -> None:
    a = app()
    bad = [
        dict(rule="FREQ=WEEKLY;UNTIL=20250101T000000Z"),
        dict(rule="FREQ=NEVER"),
        dict(rule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=31"),
        dict(rule="FREQ=DAILY;COUNT=10001"),
        dict(rule="FREQ=SECONDLY"),
        dict(capacity=0),
        dict(location={"lat": 100, "lon": 0}),
        dict(visibility="secret"),
    ]
    for kw in bad:
        with pytest.raises(InvalidInput):
            weekly(a, **kw)
    with pytest.raises(InvalidInput):
        a.schedule_series(ScheduleSeries("X", [HOST], dt.datetime(2026, 1, 6, 18), "Nowhere/City", 60,
                                         "FREQ=DAILY;COUNT=2"), CTX, NOW)
    assert log_size(a) == 0


def test_open_ended_series_generate_a_rolling_horizon() -> None:
    a = app()
    out = weekly(a, rule="FREQ=WEEKLY;BYDAY=TU")
    series = a.get_series(out.series_id)
    assert series.generated_until == NOW + HORIZON
    assert len(out.added) == 13 and all(a.get_session(s).start <= NOW + HORIZON for s in out.added)
    assert a.extend_horizon(out.series_id, CTX, NOW) == 0  # idempotent
    assert a.extend_horizon(out.series_id, CTX, NOW + dt.timedelta(days=14)) == 2


@st.composite
def edit_scripts(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    return draw(st.lists(st.tuples(st.sampled_from(["cancel", "move", "extend", "rule", "split"]),
                                   st.integers(0, 30), st.integers(1, 20)), max_size=12))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit_scripts(), st.booleans())
def test_edits_never_duplicate_or_lose_a_session_and_cancelled_ones_stay_cancelled(
        script: list[tuple[str, int, int]], open_ended: bool) -> None:
    a = app()
    out = weekly(a, rule="FREQ=WEEKLY;BYDAY=TU" if open_ended else "FREQ=WEEKLY;BYDAY=TU;COUNT=20")
    series_ids = [out.series_id]
    now = NOW
    cancelled: set[uuid.UUID] = set()
    for op, pick, days in script:
        now += dt.timedelta(days=days)
        current = a.get_series(series_ids[-1])
        future = [s for s in sessions_of(a, current.id) if s.start > now and not s.cancelled]
        try:
            if op == "cancel" and future:
                s = future[pick % len(future)]
                a.cancel_session(CancelSession(s.id, "x"), CTX, now)
                cancelled.add(s.id)
            elif op == "move" and future:
                s = future[pick % len(future)]
                a.change_session(ChangeSession(s.id, capacity=pick + 1), CTX, now)
            elif op == "extend":
                a.extend_horizon(current.id, CTX, now)
            elif op == "rule":
                day = ["MO", "TU", "WE", "TH"][pick % 4]
                a.change_series_rule(ChangeSeriesRule(current.id, current.start, current.time_zone, 60,
                                                      f"FREQ=WEEKLY;BYDAY={day}" + ("" if open_ended else ";COUNT=20")),
                                     CTX, now)
            elif op == "split" and future:
                r = a.change_this_and_following(ChangeThisAndFollowing(future[pick % len(future)].id,
                                                                       start_time=dt.time(pick % 24)), CTX, now)
                series_ids.append(r.new_series_id)
        except InvalidInput:
            pass  # e.g. a split that leaves no occurrences: refused, nothing written
    for sid in series_ids:
        series = a.get_series(sid)
        generated = series.occurrences()
        assert len({o.original_start for o in generated}) == len(generated)
        for o in generated:  # nothing lost: every occurrence the series generates has its session...
            if o.start > now or series.generated_until is None:
                try:
                    a.get_session(session_id(sid, o.original_start))
                except Exception as e:  # noqa: BLE001
                    # ...unless it became due only after a later edit in the past
                    assert o.start <= now, f"occurrence {o.original_start} of {sid} has no session: {e}"
    for sid in cancelled:  # a cancelled session is never re-created or revived
        s = a.get_session(sid)
        assert s.cancelled
        assert sum(1 for e in a.events.get(sid) if type(e).__name__ == "Scheduled") == 1


def test_only_hosts_admins_and_the_platform_may_change_a_series() -> None:
    from domain.authorization import Forbidden, NotSignedIn

    a = app()
    out = weekly(a)
    stranger = CommandContext.for_user(uuid.UUID(int=99))
    with pytest.raises(Forbidden):
        a.cancel_session(CancelSession(out.added[0]), stranger, NOW)
    with pytest.raises(NotSignedIn):
        a.cancel_session(CancelSession(out.added[0]), CommandContext(), NOW)
    with pytest.raises(Forbidden):  # nobody schedules in someone else's name
        a.schedule_series(ScheduleSeries("X", [HOST], dt.datetime(2026, 1, 6, 18), "UTC", 60), stranger, NOW)
    admin = CommandContext.for_user(uuid.UUID(int=98), {"member", "platform_admin"})
    a.cancel_session(CancelSession(out.added[0], "admin"), admin, NOW)
    assert a.get_session(out.added[0]).cancelled
    assert a.extend_horizon(out.series_id, CommandContext.system("scheduler"), NOW) == 0

"""Time zones, DST, descriptions and refusals of recurrence rules."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.recurrence import MAX_OCCURRENCES, UTC, Recurrence, check_recurrence, describe, expand, resolve_local

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def rec(rule: str | None, start: dt.datetime, tz: str = "Europe/Berlin", **kw: object) -> Recurrence:
    return Recurrence(start, tz, dt.timedelta(hours=1), rule, **kw)  # type: ignore[arg-type]


def test_weekly_sessions_keep_their_wall_time_across_dst() -> None:
    occ = expand(rec("FREQ=WEEKLY;BYDAY=TU;COUNT=3", dt.datetime(2026, 3, 17, 18, 0)))
    assert [o.original_start.hour for o in occ] == [18, 18, 18]
    assert [o.start.astimezone(BERLIN).hour for o in occ] == [18, 18, 18]
    assert [o.start.hour for o in occ] == [17, 17, 16]  # UTC moves when Berlin goes to summer time (29 March)


def test_a_wall_time_skipped_by_spring_forward_moves_forward_by_the_gap() -> None:
    occ = expand(rec("FREQ=DAILY;COUNT=3", dt.datetime(2026, 3, 28, 2, 30)))
    skipped = occ[1]
    assert skipped.original_start == dt.datetime(2026, 3, 29, 2, 30)
    assert skipped.start == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert skipped.start.astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    assert occ[2].start.astimezone(BERLIN).strftime("%H:%M") == "02:30"


def test_a_wall_time_repeated_by_fall_back_takes_its_first_occurrence() -> None:
    occ = expand(rec("FREQ=DAILY;COUNT=2", dt.datetime(2026, 10, 24, 2, 30)))
    ambiguous = occ[1]
    assert ambiguous.original_start == dt.datetime(2026, 10, 25, 2, 30)
    assert ambiguous.start == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, not 02:30 CET
    assert ambiguous.start.astimezone(BERLIN).strftime("%Z") == "CEST"


def test_the_same_rule_across_midnight_and_the_date_line() -> None:
    occ = expand(rec("FREQ=WEEKLY;BYDAY=MO;COUNT=2", dt.datetime(2026, 1, 5, 0, 30), tz="Pacific/Kiritimati"))
    assert [o.start.date() for o in occ] == [dt.date(2026, 1, 4), dt.date(2026, 1, 11)]  # Sunday in UTC


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC",
                     "America/Sao_Paulo", "Pacific/Chatham"]),
    st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0)),
    st.sampled_from(["DAILY", "WEEKLY", "MONTHLY"]),
    st.integers(1, 3),
    st.integers(1, 40),
    st.lists(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]), unique=True, max_size=3),
)
def test_sessions_equal_dateutils_expansion_in_the_series_zone(
        tz: str, start: dt.datetime, freq: str, interval: int, count: int, byday: list[str]) -> None:
    rule = f"FREQ={freq};INTERVAL={interval};COUNT={count}" + (f";BYDAY={','.join(byday)}" if byday else "")
    occ = expand(rec(rule, start, tz=tz))
    expected = list(rrulestr("RRULE:" + rule, dtstart=start))
    zone = zoneinfo.ZoneInfo(tz)
    assert [o.original_start for o in occ] == expected
    assert [o.start for o in occ] == [w.replace(tzinfo=zone).astimezone(UTC) for w in expected]
    assert all(o.end - o.start == dt.timedelta(hours=1) for o in occ)


@pytest.mark.parametrize("rule,start,expected", [
    ("FREQ=WEEKLY;BYDAY=TU;COUNT=4", dt.datetime(2026, 1, 6, 18), "Every Tuesday at 18:00, 4 times"),
    ("FREQ=MONTHLY;BYDAY=1MO", dt.datetime(2026, 1, 5, 19), "Every month on the first Monday at 19:00"),
    ("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", dt.datetime(2026, 1, 5, 7, 30), "Every weekday at 07:30"),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;UNTIL=20260630T000000Z", dt.datetime(2026, 1, 6, 18),
     "Every 2 weeks on Tuesday and Thursday at 18:00, until 30 June 2026"),
    ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", dt.datetime(2026, 1, 30, 17),
     "Every month on the last weekday at 17:00"),
    ("FREQ=DAILY;COUNT=1", dt.datetime(2026, 1, 6, 18), "Every day at 18:00, once"),
    (None, dt.datetime(2026, 1, 6, 18), "Once, on 6 January 2026 at 18:00"),
])
def test_plain_language_descriptions(rule: str | None, start: dt.datetime, expected: str) -> None:
    assert describe(rec(rule, start)) == expected


def test_exceptions_and_extra_dates_are_described_and_applied() -> None:
    r = rec("FREQ=WEEKLY;BYDAY=TU;COUNT=4", dt.datetime(2026, 1, 6, 18),
            exdates=(dt.datetime(2026, 1, 13, 18),), rdates=(dt.datetime(2026, 1, 15, 18),))
    assert [o.original_start.day for o in expand(r)] == [6, 15, 20, 27]
    assert describe(r) == "Every Tuesday at 18:00, 4 times (except 1 date) (plus 1 extra date)"


@pytest.mark.parametrize("rule,start,tz,field", [
    ("FREQ=SOMETIMES", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("BYDAY=TU", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("FREQ=WEEKLY;;", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("FREQ=WEEKLY;COUNT=2;UNTIL=20260101T000000Z", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("FREQ=WEEKLY;UNTIL=20250101T000000Z", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", dt.datetime(2026, 1, 6, 18), "Europe/Berlin", "rule"),
    ("FREQ=WEEKLY;COUNT=4", dt.datetime(2026, 1, 6, 18), "Mars/Olympus_Mons", "time_zone"),
])
def test_bad_rules_are_refused_with_the_field(rule: str, start: dt.datetime, tz: str, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_recurrence(rec(rule, start, tz=tz))
    assert e.value.details["field"] == field


def test_more_than_the_limit_is_refused_without_generating_it() -> None:
    with pytest.raises(InvalidInput):
        expand(rec(f"FREQ=DAILY;COUNT={MAX_OCCURRENCES + 1}", dt.datetime(2026, 1, 1)))
    with pytest.raises(InvalidInput):  # open-ended: too many within the horizon
        expand(rec("FREQ=MINUTELY", dt.datetime(2026, 1, 1)), dt.datetime(2026, 4, 1, tzinfo=UTC))
    assert len(expand(rec(f"FREQ=DAILY;COUNT={MAX_OCCURRENCES}", dt.datetime(2026, 1, 1)))) == MAX_OCCURRENCES


def test_open_ended_rules_need_a_horizon() -> None:
    with pytest.raises(ValueError):
        expand(rec("FREQ=DAILY", dt.datetime(2026, 1, 1)))


def test_resolve_local_reads_fold_zero() -> None:
    assert resolve_local(dt.datetime(2026, 1, 1, 12), BERLIN) == dt.datetime(2026, 1, 1, 11, tzinfo=UTC)

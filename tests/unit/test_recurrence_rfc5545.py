"""The RRULE examples of RFC 5545 section 3.8.5.3, as test vectors.

Each starts at 09:00 America/New_York (DTSTART;TZID=America/New_York) unless
written otherwise; the expected local dates are written out as in the RFC.
Open-ended rules are compared on their first occurrences."""

from __future__ import annotations

import datetime as dt

import pytest

from domain.recurrence import UTC, Recurrence, expand

NY = "America/New_York"


def days(year: int, month: int, *ds: int) -> list[tuple[int, int, int]]:
    return [(year, month, d) for d in ds]


VECTORS = [
    # (title, DTSTART date, RRULE, expected local dates (y, m, d); for open-ended ones the first few)
    ("daily for 10 occurrences", (1997, 9, 2), "FREQ=DAILY;COUNT=10", days(1997, 9, *range(2, 12))),
    ("every 10 days, 5 occurrences", (1997, 9, 2), "FREQ=DAILY;INTERVAL=10;COUNT=5",
     days(1997, 9, 2, 12, 22) + days(1997, 10, 2, 12)),
    ("every other day, forever", (1997, 9, 2), "FREQ=DAILY;INTERVAL=2", days(1997, 9, 2, 4, 6, 8, 10)),
    ("weekly for 10 occurrences", (1997, 9, 2), "FREQ=WEEKLY;COUNT=10",
     days(1997, 9, 2, 9, 16, 23, 30) + days(1997, 10, 7, 14, 21, 28) + days(1997, 11, 4)),
    ("weekly on Tuesday and Thursday for five weeks", (1997, 9, 2),
     "FREQ=WEEKLY;UNTIL=19971007T000000Z;WKST=SU;BYDAY=TU,TH",
     days(1997, 9, 2, 4, 9, 11, 16, 18, 23, 25, 30) + days(1997, 10, 2)),
    ("every other week on MO, WE, FR until 24 Dec 1997", (1997, 9, 1),
     "FREQ=WEEKLY;INTERVAL=2;UNTIL=19971224T000000Z;WKST=SU;BYDAY=MO,WE,FR",
     days(1997, 9, 1, 3, 5, 15, 17, 19, 29) + days(1997, 10, 1, 3, 13, 15, 17, 27, 29, 31)
     + days(1997, 11, 10, 12, 14, 24, 26, 28) + days(1997, 12, 8, 10, 12, 22)),
    ("every other week on TU and TH, 8 occurrences", (1997, 9, 2),
     "FREQ=WEEKLY;INTERVAL=2;COUNT=8;WKST=SU;BYDAY=TU,TH",
     days(1997, 9, 2, 4, 16, 18, 30) + days(1997, 10, 2, 14, 16)),
    ("monthly on the first Friday, 10 occurrences", (1997, 9, 5), "FREQ=MONTHLY;COUNT=10;BYDAY=1FR",
     days(1997, 9, 5) + days(1997, 10, 3) + days(1997, 11, 7) + days(1997, 12, 5) + days(1998, 1, 2)
     + days(1998, 2, 6) + days(1998, 3, 6) + days(1998, 4, 3) + days(1998, 5, 1) + days(1998, 6, 5)),
    ("every other month on the first and last Sunday, 10 occurrences", (1997, 9, 7),
     "FREQ=MONTHLY;INTERVAL=2;COUNT=10;BYDAY=1SU,-1SU",
     days(1997, 9, 7, 28) + days(1997, 11, 2, 30) + days(1998, 1, 4, 25) + days(1998, 3, 1, 29)
     + days(1998, 5, 3, 31)),
    ("monthly on the second-to-last Monday, 6 months", (1997, 9, 22), "FREQ=MONTHLY;COUNT=6;BYDAY=-2MO",
     days(1997, 9, 22) + days(1997, 10, 20) + days(1997, 11, 17) + days(1997, 12, 22) + days(1998, 1, 19)
     + days(1998, 2, 16)),
    ("monthly on the third-to-the-last day, forever", (1997, 9, 28), "FREQ=MONTHLY;BYMONTHDAY=-3",
     days(1997, 9, 28) + days(1997, 10, 29) + days(1997, 11, 28) + days(1997, 12, 29) + days(1998, 1, 29)
     + days(1998, 2, 26)),
    ("monthly on the 2nd and 15th, 10 occurrences", (1997, 9, 2), "FREQ=MONTHLY;COUNT=10;BYMONTHDAY=2,15",
     days(1997, 9, 2, 15) + days(1997, 10, 2, 15) + days(1997, 11, 2, 15) + days(1997, 12, 2, 15)
     + days(1998, 1, 2, 15)),
    ("monthly on the first and last day, 10 occurrences", (1997, 9, 30), "FREQ=MONTHLY;COUNT=10;BYMONTHDAY=1,-1",
     days(1997, 9, 30) + days(1997, 10, 1, 31) + days(1997, 11, 1, 30) + days(1997, 12, 1, 31)
     + days(1998, 1, 1, 31) + days(1998, 2, 1)),
    ("every Tuesday, every other month", (1997, 9, 2), "FREQ=MONTHLY;INTERVAL=2;BYDAY=TU",
     days(1997, 9, 2, 9, 16, 23, 30) + days(1997, 11, 4, 11, 18, 25) + days(1998, 1, 6, 13, 20, 27)
     + days(1998, 3, 3, 10, 17, 24, 31)),
    ("yearly in June and July, 10 occurrences", (1997, 6, 10), "FREQ=YEARLY;COUNT=10;BYMONTH=6,7",
     [(y, m, 10) for y in range(1997, 2002) for m in (6, 7)]),
    ("every 3rd year on the 1st, 100th and 200th day, 10 occurrences", (1997, 1, 1),
     "FREQ=YEARLY;INTERVAL=3;COUNT=10;BYYEARDAY=1,100,200",
     days(1997, 1, 1) + days(1997, 4, 10) + days(1997, 7, 19) + days(2000, 1, 1) + days(2000, 4, 9)
     + days(2000, 7, 18) + days(2003, 1, 1) + days(2003, 4, 10) + days(2003, 7, 19) + days(2006, 1, 1)),
    ("every 20th Monday of the year", (1997, 5, 19), "FREQ=YEARLY;BYDAY=20MO",
     days(1997, 5, 19) + days(1998, 5, 18) + days(1999, 5, 17)),
    ("Monday of week number 20", (1997, 5, 12), "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
     days(1997, 5, 12) + days(1998, 5, 11) + days(1999, 5, 17)),
    ("every Thursday in March", (1997, 3, 13), "FREQ=YEARLY;BYMONTH=3;BYDAY=TH",
     days(1997, 3, 13, 20, 27) + days(1998, 3, 5, 12, 19, 26) + days(1999, 3, 4, 11, 18, 25)),
    ("the first Saturday after the first Sunday", (1997, 9, 13),
     "FREQ=MONTHLY;BYDAY=SA;BYMONTHDAY=7,8,9,10,11,12,13",
     days(1997, 9, 13) + days(1997, 10, 11) + days(1997, 11, 8) + days(1997, 12, 13) + days(1998, 1, 10)
     + days(1998, 2, 7) + days(1998, 3, 7) + days(1998, 4, 11) + days(1998, 5, 9) + days(1998, 6, 13)),
    ("US presidential election day", (1996, 11, 5), "FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8",
     days(1996, 11, 5) + days(2000, 11, 7) + days(2004, 11, 2)),
    ("third instance of TU, WE or TH, next 3 months", (1997, 9, 4), "FREQ=MONTHLY;COUNT=3;BYDAY=TU,WE,TH;BYSETPOS=3",
     days(1997, 9, 4) + days(1997, 10, 7) + days(1997, 11, 6)),
    ("second-to-last weekday of the month", (1997, 9, 29), "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
     days(1997, 9, 29) + days(1997, 10, 30) + days(1997, 11, 27) + days(1997, 12, 30) + days(1998, 1, 29)
     + days(1998, 2, 26) + days(1998, 3, 30)),
    ("WKST=MO changes the result", (1997, 8, 5), "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
     days(1997, 8, 5, 10, 19, 24)),
    ("WKST=SU changes the result", (1997, 8, 5), "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
     days(1997, 8, 5, 17, 19, 31)),
]


@pytest.mark.parametrize("title,start,rule,expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_rfc5545_example(title: str, start: tuple[int, int, int], rule: str,
                         expected: list[tuple[int, int, int]]) -> None:
    rec = Recurrence(dt.datetime(*start, 9, 0), NY, dt.timedelta(hours=1), rule)
    horizon = dt.datetime(2010, 1, 1, tzinfo=UTC) if rec.open_ended else None
    got = [(o.original_start.year, o.original_start.month, o.original_start.day) for o in expand(rec, horizon)]
    assert got[: len(expected)] == expected
    if not rec.open_ended:
        assert len(got) == len(expected)
    assert all(o.original_start.time() == dt.time(9, 0) for o in expand(rec, horizon)[:20])


def test_every_day_in_january_for_3_years() -> None:
    rec = Recurrence(dt.datetime(1998, 1, 1, 9, 0), NY, dt.timedelta(hours=1),
                     "FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA")
    got = [o.original_start.date() for o in expand(rec)]
    assert got == [dt.date(y, 1, d) for y in (1998, 1999, 2000) for d in range(1, 32)]


def test_daily_until_december_24() -> None:
    rec = Recurrence(dt.datetime(1997, 9, 2, 9, 0), NY, dt.timedelta(hours=1), "FREQ=DAILY;UNTIL=19971224T000000Z")
    got = [o.original_start.date() for o in expand(rec)]
    assert got[0] == dt.date(1997, 9, 2) and got[-1] == dt.date(1997, 12, 23) and len(got) == 113


def test_friday_13th_with_exdate_of_the_start() -> None:
    start = dt.datetime(1997, 9, 2, 9, 0)
    rec = Recurrence(start, NY, dt.timedelta(hours=1), "FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13", exdates=(start,))
    got = [o.original_start.date() for o in expand(rec, dt.datetime(2001, 1, 1, tzinfo=UTC))]
    assert got == [dt.date(1998, 2, 13), dt.date(1998, 3, 13), dt.date(1998, 11, 13), dt.date(1999, 8, 13),
                   dt.date(2000, 10, 13)]


def test_every_20_minutes_from_9_to_16_40() -> None:
    rec = Recurrence(dt.datetime(1997, 9, 2, 9, 0), NY, dt.timedelta(minutes=10),
                     "FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16;BYMINUTE=0,20,40")
    got = [o.original_start for o in expand(rec, dt.datetime(1997, 9, 3, 4, tzinfo=UTC))]
    assert [t.strftime("%H:%M") for t in got[:3]] == ["09:00", "09:20", "09:40"]
    assert got[-1] == dt.datetime(1997, 9, 2, 16, 40) and len(got) == 24

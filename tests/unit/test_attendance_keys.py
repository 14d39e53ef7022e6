"""The attendance projection's sort keys: one fixed-width UTC form for any
ISO 8601 instant, so text order is time order (the fast path for the UTC
stamps the log holds must agree with the general one)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from projections.attendance import utc_key

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
INSTANTS = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2999, 12, 30), timezones=OFFSETS)


def general(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(INSTANTS)
def test_a_key_is_the_instant_in_utc_to_the_microsecond_whatever_its_offset(at: dt.datetime) -> None:
    iso = at.isoformat()
    assert utc_key(iso) == general(iso)
    assert utc_key(at.astimezone(dt.timezone.utc).isoformat()) == utc_key(iso)  # the same instant, the same key
    assert dt.datetime.strptime(utc_key(iso), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc) == at


@given(INSTANTS, INSTANTS)
def test_keys_sort_as_their_instants(a: dt.datetime, b: dt.datetime) -> None:
    assert (utc_key(a.isoformat()) < utc_key(b.isoformat())) == (a < b)

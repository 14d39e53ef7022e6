"""Recurrence rules (RFC 5545 RRULE, EXDATE, RDATE) expanded in a series'
own time zone, through python-dateutil. Pure functions; no I/O.

Wall time is what people agree on ("Tuesdays at 18:00"), so rules are
expanded in local wall time and each occurrence is then placed on the UTC
time line with `resolve_local`:

* A wall time that does not exist (the hour skipped when clocks go forward)
  moves forward by the length of the gap: 02:30 on a spring-forward night in
  Europe/Berlin becomes 03:30 CEST.
* A wall time that happens twice (the hour repeated when clocks go back)
  takes its first occurrence, the earlier instant (still on summer time).

This is Python's `fold=0` reading (PEP 495), and what most calendar apps do.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import zoneinfo
from dataclasses import dataclass, field

from dateutil.rrule import rrulestr, rruleset

from domain.errors import InvalidInput

MAX_OCCURRENCES = 10_000  # per series: more is refused, never generated
HORIZON = dt.timedelta(days=90)  # open-ended rules are generated this far ahead
UTC = dt.timezone.utc
_PART = re.compile(r"^[A-Z]+=[A-Z0-9,+\-]+$")


@dataclass(frozen=True)
class Recurrence:
    """When a series' sessions happen. `start` is the first session's local
    wall time (naive), in `time_zone`; `rule` is an RRULE value without the
    `RRULE:` prefix, or None for a one-off (plus any `rdates`)."""

    start: dt.datetime
    time_zone: str
    duration: dt.timedelta
    rule: str | None = None
    exdates: tuple[dt.datetime, ...] = ()
    rdates: tuple[dt.datetime, ...] = ()

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def open_ended(self) -> bool:
        parts = rule_parts(self.rule) if self.rule else {}
        return bool(self.rule) and "COUNT" not in parts and "UNTIL" not in parts


@dataclass(frozen=True, order=True)
class Occurrence:
    original_start: dt.datetime  # local wall time from the rule: the occurrence's identity
    start: dt.datetime = field(compare=False)  # UTC
    end: dt.datetime = field(compare=False)  # UTC


def resolve_local(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant of a local wall time, by the rule in the module docstring."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def rule_parts(rule: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in rule.strip().split(";"):
        if not _PART.match(item):
            raise InvalidInput(f"RRULE part {item!r} is not NAME=VALUE", field="rule")
        name, value = item.split("=", 1)
        if name in parts:
            raise InvalidInput(f"RRULE part {name} appears twice", field="rule")
        parts[name] = value
    if "FREQ" not in parts:
        raise InvalidInput("RRULE needs FREQ", field="rule")
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidInput("RRULE may have COUNT or UNTIL, not both", field="rule")
    return parts


def _local_rule(rule: str, zone: zoneinfo.ZoneInfo) -> str:
    """UNTIL in UTC (`...Z`, as RFC 5545 asks when DTSTART has a zone) becomes
    local wall time, so dateutil can compare it with naive local starts."""
    parts = rule_parts(rule)
    until = parts.get("UNTIL")
    if until and until.endswith("Z"):
        try:
            instant = dt.datetime.strptime(until, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError as e:
            raise InvalidInput(f"UNTIL {until!r} is not a date-time", field="rule") from e
        parts["UNTIL"] = instant.astimezone(zone).strftime("%Y%m%dT%H%M%S")
    return ";".join(f"{k}={v}" for k, v in parts.items())


def check_recurrence(rec: Recurrence) -> Recurrence:
    """Refuse what cannot be scheduled, with a clear reason."""
    try:
        zone = rec.zone
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(f"unknown time zone {rec.time_zone!r}", field="time_zone") from e
    if rec.start.tzinfo is not None:
        raise InvalidInput("start is a local wall time: give it without an offset", field="start")
    if not dt.timedelta(minutes=1) <= rec.duration <= dt.timedelta(days=7):
        raise InvalidInput("duration must be between 1 minute and 7 days", field="duration_minutes")
    if rec.rule:
        parts = rule_parts(rec.rule)
        if "UNTIL" in parts:
            until = rule_parts(_local_rule(rec.rule, zone))["UNTIL"]
            try:
                until_dt = dt.datetime.strptime(until[:15], "%Y%m%dT%H%M%S") if "T" in until \
                    else dt.datetime.strptime(until, "%Y%m%d").replace(hour=23, minute=59, second=59)
            except ValueError as e:
                raise InvalidInput(f"UNTIL {until!r} is not a date or date-time", field="rule") from e
            if until_dt < rec.start:
                raise InvalidInput("UNTIL is before the start", field="rule")
        _set(rec)  # parses
    first = next(iter(_local_starts(rec)), None)
    if first is None:
        raise InvalidInput("this rule has no occurrences", field="rule")
    return rec


def _set(rec: Recurrence) -> rruleset:
    rs = rruleset()
    if rec.rule:
        try:
            rs.rrule(rrulestr("RRULE:" + _local_rule(rec.rule, rec.zone), dtstart=rec.start))  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError) as e:
            raise InvalidInput(f"RRULE does not parse: {e}", field="rule") from e
    else:
        rs.rdate(rec.start)
    for d in rec.rdates:
        rs.rdate(d)
    for d in rec.exdates:
        rs.exdate(d)
    return rs


def _local_starts(rec: Recurrence):  # type: ignore[no-untyped-def]
    return iter(_set(rec))


def expand(rec: Recurrence, until: dt.datetime | None = None) -> list[Occurrence]:
    """Occurrences in order. Rules with COUNT or UNTIL are expanded fully; an
    open-ended rule only up to `until` (UTC), which is required for it. More
    than MAX_OCCURRENCES is refused, without generating them all."""
    if rec.open_ended and until is None:
        raise ValueError("an open-ended rule needs a horizon")
    zone = rec.zone
    local_until = until.astimezone(zone).replace(tzinfo=None) if until else None
    out = []
    for wall in itertools.islice(_local_starts(rec), MAX_OCCURRENCES + 1):
        if local_until is not None and wall > local_until:
            break
        start = resolve_local(wall, zone)
        out.append(Occurrence(wall, start, start + rec.duration))
    if len(out) > MAX_OCCURRENCES:
        raise InvalidInput(f"this rule gives more than {MAX_OCCURRENCES:,} sessions"
                           + (" within the scheduling horizon" if rec.open_ended else ""), field="rule")
    return out


# ------------------------------------------------------------------ describe
_DAYS = {"MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday",
         "SA": "Saturday", "SU": "Sunday"}
_UNITS = {"YEARLY": "year", "MONTHLY": "month", "WEEKLY": "week", "DAILY": "day", "HOURLY": "hour",
          "MINUTELY": "minute", "SECONDLY": "second"}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _ordinal(n: int) -> str:
    words = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last", -2: "second to last"}
    if n in words:
        return words[n]
    suffix = "th" if 10 <= abs(n) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(abs(n) % 10, "th")
    return f"{n}{suffix}" if n > 0 else f"{-n}{suffix} from last"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(rec: Recurrence) -> str:
    """Plain English for people: "Every Tuesday at 18:00, 4 times"."""
    at = f"at {rec.start:%H:%M}"
    if not rec.rule:
        return f"Once, on {rec.start.day} {_MONTHS[rec.start.month - 1]} {rec.start.year} {at}"
    p = rule_parts(rec.rule)
    unit = _UNITS.get(p["FREQ"], p["FREQ"].lower())
    interval = int(p.get("INTERVAL", "1"))
    days = [d for d in p.get("BYDAY", "").split(",") if d]
    plain_days = [d for d in days if d in _DAYS]
    text = "Every " + (f"{interval} {unit}s" if interval > 1 else unit)
    if unit == "week" and days and len(plain_days) == len(days):
        if set(days) == {"MO", "TU", "WE", "TH", "FR"} and interval == 1:
            text = "Every weekday"
        elif interval == 1:
            text = "Every " + _join([_DAYS[d] for d in days])
        else:
            text += " on " + _join([_DAYS[d] for d in days])
    elif unit == "day" and interval == 1 and not days:
        text = "Every day"
    elif days:
        named = []
        for d in days:
            m = re.match(r"^([+-]?\d+)?([A-Z]{2})$", d)
            if not m or m.group(2) not in _DAYS:
                continue
            named.append((_ordinal(int(m.group(1))) + " " if m.group(1) else "") + _DAYS[m.group(2)])
        if "BYSETPOS" in p and set(days) == {"MO", "TU", "WE", "TH", "FR"}:
            text += f" on the {_join([_ordinal(int(x)) for x in p['BYSETPOS'].split(',')])} weekday"
        elif "BYSETPOS" in p and len(named) > 1:
            text += f" on the {_join([_ordinal(int(x)) for x in p['BYSETPOS'].split(',')])} of " + _join(named)
        else:
            text += " on the " + _join(named) if any(d[0] in "+-0123456789" for d in days) else " on " + _join(named)
    if "BYMONTHDAY" in p:
        text += " on the " + _join([_ordinal(int(x)) for x in p["BYMONTHDAY"].split(",")]) + " day"
    if "BYMONTH" in p:
        text += " in " + _join([_MONTHS[int(x) - 1] for x in p["BYMONTH"].split(",")])
    text += f" {at}"
    if "COUNT" in p:
        n = int(p["COUNT"])
        text += ", once" if n == 1 else f", {n} times"
    elif "UNTIL" in p:
        until = rule_parts(_local_rule(rec.rule, rec.zone))["UNTIL"]
        d = dt.datetime.strptime(until[:8], "%Y%m%d")
        text += f", until {d.day} {_MONTHS[d.month - 1]} {d.year}"
    if rec.exdates:
        text += f" (except {len(rec.exdates)} date{'s' if len(rec.exdates) > 1 else ''})"
    if rec.rdates:
        text += f" (plus {len(rec.rdates)} extra date{'s' if len(rec.rdates) > 1 else ''})"
    return text

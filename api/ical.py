"""iCalendar feeds (RFC 5545) of sessions, from the sessions read model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from icalendar import Calendar, Event, vGeo


def calendar(name: str, sessions: Iterable[dict[str, Any]], now: dt.datetime) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//AttendWise//attendwise//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    for s in sessions:
        ev = Event()
        ev.add("uid", f"{s['id']}@attendwise")
        ev.add("dtstamp", now)
        ev.add("dtstart", dt.datetime.fromisoformat(s["start"]))
        ev.add("dtend", dt.datetime.fromisoformat(s["end_"]))
        ev.add("summary", s["title"])
        ev.add("sequence", max(s["version"] - 1, 0))
        ev.add("status", "CANCELLED" if s["status"] == "cancelled" else "CONFIRMED")
        loc = s.get("location") or {}
        where = ", ".join(x for x in (loc.get("name"), loc.get("address")) if x)
        if where:
            ev.add("location", where)
        if loc.get("lat") is not None:
            ev.add("geo", vGeo((loc["lat"], loc["lon"])))
        cal.add_component(ev)
    return cal.to_ical()

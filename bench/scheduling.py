"""Scheduling benchmark: a series with 10,000 occurrences (expansion plus
appending 10,001 events), then "this and all following" from its middle.

    python -m bench.scheduling          (PostgreSQL from ATTENDWISE_DATABASE_URL; SQLite otherwise)

The baseline, measured in the same run, is appending the same number of
already-built events straight into the recorder in one call: what the store
costs without expansion and aggregate building.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
import uuid
from pathlib import Path


from bench.report import print_table
from adapters.eventstore import open_event_store
from bench.foundation import fresh_database
from commands.application import stamp
from commands.messages import ChangeThisAndFollowing, CommandContext, ScheduleSeries
from domain.recurrence import UTC
from domain.scheduling import session_id

N = 10_000


def run(url: str | None, folder: Path) -> list[tuple[str, str, str, str]]:
    app = open_event_store(url, folder / "events.sqlite3")
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    cmd = ScheduleSeries("Daily stand-up", [str(uuid.uuid4())], dt.datetime(2026, 1, 2, 9), "Europe/Berlin", 15,
                         f"FREQ=DAILY;COUNT={N}")
    t = time.perf_counter()
    out = app.schedule_series(cmd, CommandContext.system("bench"), now)
    create = time.perf_counter() - t
    assert len(out.added) == N

    middle = app.get_series(out.series_id).occurrences()[N // 2]
    t = time.perf_counter()
    split = app.change_this_and_following(
        ChangeThisAndFollowing(session_id(out.series_id, middle.original_start), start_time=dt.time(10)),
        CommandContext.system("bench"), now)
    edit = time.perf_counter() - t
    assert len(split.cancelled) == N // 2 and len(split.added) == N // 2

    # baseline: the same number of stored events, built beforehand, in one insert
    ids = [uuid.uuid4() for _ in range(N + 1)]
    from domain.users import User

    events = []
    for i in ids:
        u = User.register(f"{i.hex}@bench.org", "B")
        for ev in u.collect_events():
            stamp(ev, CommandContext())
            events.append(app.mapper.to_stored_event(ev))
    t = time.perf_counter()
    app.recorder.insert_events(events)
    raw = time.perf_counter() - t
    app.close()
    store = "PostgreSQL" if url else "SQLite"
    return [
        (f"create series, {N:,} sessions ({store})", f"{create * 1000:,.0f} ms",
         f"{raw * 1000:,.0f} ms raw insert of {N + 1:,} events", f"{create / raw:.1f}x"),
        (f"this and following from the middle ({N // 2:,} cancelled + {N // 2:,} added)", f"{edit * 1000:,.0f} ms",
         "", ""),
    ]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        rows += run(None, Path(d))
    admin = os.environ.get("ATTENDWISE_DATABASE_URL")
    if admin:
        with fresh_database(admin.rsplit("/", 1)[0] + "/postgres") as url, tempfile.TemporaryDirectory() as d:
            rows += run(url, Path(d))
    print_table("Scheduling benchmark",
                ("measure", "AttendWise", "baseline (same run)", "ratio"), rows)


if __name__ == "__main__":
    main()

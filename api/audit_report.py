"""The auditors' reports as text: json, csv or rich tables (the CLI's
`--format`). The queries themselves are in `commands/audit.py`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from commands.audit import FORMATS
from domain.checkin_history import COUNT_KEYS, CSV_COLUMNS, AttendanceAsOf, MemberAsOf, Story, story_rows
from domain.errors import InvalidInput


def render_stories(stories: Sequence[Story], fmt: str) -> str:
    """json: a list of stories with stable keys; csv: one row per story entry;
    table: one table per story."""
    if fmt == "json":
        return json.dumps([s.as_dict() for s in stories], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(story_rows(stories))
        return out.getvalue()
    _check_format(fmt)
    from rich.table import Table

    tables: list[Any] = []
    for s in stories:
        who = f"{s.user_name or '?'} ({s.user_id})" if s.user_id else "unknown member (unreadable ticket)"
        head = (f"check-in {s.checkin_id}" if s.kind == "checkin" else "host override") + f" · {who} · {s.outcome}"
        table = Table(title=head + (f" {s.reason}" if s.reason else ""), title_justify="left",
                      caption=f"session {s.session_id or '-'}", caption_justify="left")
        for col in ("pos", "at", "event", "by", "what"):
            table.add_column(col, overflow="fold")
        for e in s.entries:
            by = f"{e.actor_name} ({e.actor})" if e.actor_name else e.actor
            table.add_row(str(e.position), e.at[:23], e.event, by, e.summary)
        tables.append(table)
    return _rich(tables, f"{len(stories)} check-in stor{'y' if len(stories) == 1 else 'ies'}")


def render_attendance(snapshot: AttendanceAsOf, fmt: str) -> str:
    """json: the snapshot; csv: one row per member; table: members, then counts."""
    if fmt == "json":
        return json.dumps(snapshot.as_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=("session_id", "as_of", *MemberAsOf.KEYS), lineterminator="\n")
        writer.writeheader()
        for m in snapshot.members:
            writer.writerow({"session_id": snapshot.session_id, "as_of": snapshot.as_of, **m.as_dict()})
        return out.getvalue()
    _check_format(fmt)
    from rich.table import Table

    yes = {True: "yes", False: "no"}
    table = Table(title=f"{snapshot.title or 'session'} {snapshot.session_id} as of {snapshot.as_of}"
                        f"{' (cancelled)' if snapshot.cancelled else ''}", title_justify="left",
                  caption=f"up to log position {snapshot.position}", caption_justify="left")
    for col in ("member", "place", "attended", "inside now", "last verdict", "marked by"):
        table.add_column(col, overflow="fold")
    for m in snapshot.members:
        verdict = " ".join(x for x in (m.last_verdict, m.last_reason) if x) or "-"
        marked = f"{m.marked_by}: {m.mark_reason}" if m.marked_by else ""
        table.add_row(f"{m.user_name or '?'} ({m.user_id})", m.standing or "-", yes[m.attended],
                      yes[m.inside] + (f" ({m.gate})" if m.gate else ""), verdict, marked)
    counts = Table(title="counts", title_justify="left")
    for key in COUNT_KEYS:
        counts.add_column(key)
    counts.add_row(*(str(snapshot.counts[k]) for k in COUNT_KEYS))
    return _rich([table, counts], None)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")


def _rich(renderables: list[Any], footer: str | None) -> str:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, force_terminal=False)
    for r in renderables:
        console.print(r)
    if footer:
        console.print(footer)
    return out.getvalue()

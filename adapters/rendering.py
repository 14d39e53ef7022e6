"""Notification texts: one set of Jinja2 templates per kind in
`adapters/notify_templates/`, rendered for a channel.

For email: `<kind>.subject.j2`, `<kind>.txt.j2` (plain text) and
`<kind>.html.j2` (HTML on the shared `_layout.html.j2`, autoescaped). For push
and SMS: the same subject (the push title) and `<kind>.short.j2`, one or two
sentences cut to `SHORT_LIMIT` characters.

The texts are English; only dates and times are localised. The `when` filter
shows an ISO-8601 UTC time in the reader's time zone, in the reader's locale
(Babel, CLDR data), followed by the zone's name, so "10:00" is never ambiguous.
An unknown locale falls back to "en"; an unknown time zone to UTC (and the
label then says UTC).

Every context key a template uses must be given (StrictUndefined): a missing
one raises `jinja2.UndefinedError` rather than sending a text with a hole.
Non-transactional emails end with an unsubscribe line when the context's
`unsubscribe_url` is set; the transactional ones (`TRANSACTIONAL`) never do.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format

KINDS = ("email_verification", "password_reset", "checkin_succeeded", "checkin_failed", "session_reminder",
         "session_changed", "session_cancelled", "join_approved", "reply_to_post", "waitlist_promoted")
TRANSACTIONAL = frozenset({"email_verification", "password_reset"})
CHANNELS = ("email", "push", "sms")
SHORT_LIMIT = 300
TEMPLATES = Path(__file__).resolve().parent / "notify_templates"
DEFAULT_LOCALE = "en"

# check-in failure codes (domain) -> what the attendee reads; tests assert codes, not these
FAILURE_REASONS = {
    "FACE_MISMATCH": "The face seen at the gate did not match the one enrolled for your account.",
    "NO_FACE": "No face could be seen clearly in the picture taken at the gate.",
    "TICKET_ALREADY_USED": "This ticket has already been used to check in.",
    "TICKET_EXPIRED": "This ticket has expired.",
    "OUTSIDE_WINDOW": "Check-in is not open for this session at this time.",
    "VERIFICATION_TIMEOUT": "Verifying the check-in took too long, so it was not completed.",
}
GENERIC_FAILURE = "The check-in could not be completed."


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str  # email: the plain-text body; push/SMS: the short body
    html: str | None  # email only


def render(kind: str, channel: str, context: dict[str, Any], *, locale: str, time_zone: str) -> Rendered:
    """The texts of notification `kind` for `channel`, with times in the
    reader's `time_zone` and `locale`."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    env = _environment()
    values = {**context, "_locale": _locale(locale), "_zone": _zone(time_zone)}
    subject = " ".join(env.get_template(f"{kind}.subject.j2").render(values).split())
    values["subject"] = subject
    if channel == "email":
        text = env.get_template(f"{kind}.txt.j2").render(values).strip() + "\n"
        return Rendered(subject, text, env.get_template(f"{kind}.html.j2").render(values))
    short = " ".join(env.get_template(f"{kind}.short.j2").render(values).split())
    return Rendered(subject, _clip(short, SHORT_LIMIT), None)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, duration=duration, reason_text=reason_text)
    return env


@jinja2.pass_context
def when(ctx: jinja2.runtime.Context, value: str, style: str = "full") -> str:
    """`value` (ISO-8601, UTC) as the reader reads it: 'Sunday, 29 March 2026,
    10:00 (Europe/Berlin)'; style "full" or "medium" (the date's width)."""
    return format_when(value, ctx["_locale"], ctx["_zone"], style)


def format_when(value: str, locale: Locale, zone: ZoneInfo, style: str = "full") -> str:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    local = moment.astimezone(zone)
    date = format_date(local.date(), style, locale=locale)
    time = format_time(local, "short", tzinfo=zone, locale=locale)
    both = str(get_datetime_format(style, locale=locale)).replace("'", "").replace("{1}", date).replace("{0}", time)
    return f"{both} ({zone.key})".replace("\u202f", " ")  # CLDR's narrow space before AM/PM: not in SMS's alphabet


def duration(minutes: int) -> str:
    """60 -> '1 hour', 1440 -> '24 hours', 30 -> '30 minutes'."""
    if minutes >= 60 and minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def reason_text(code: str) -> str:
    return FAILURE_REASONS.get(code, GENERIC_FAILURE)


@functools.lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    try:
        return Locale.parse((name or DEFAULT_LOCALE).replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse(DEFAULT_LOCALE)


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return ZoneInfo("UTC")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."

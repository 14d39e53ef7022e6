"""Notification templates: every kind renders on every channel, times are in
the reader's zone and locale, HTML is escaped, and the unsubscribe line is
where it must be and nowhere else."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from adapters.rendering import GENERIC_FAILURE, KINDS, SHORT_LIMIT, TRANSACTIONAL, render

BERLIN_SUMMER_8_UTC = "2026-03-29T08:00:00+00:00"  # 10:00 in Berlin (CEST since 01:00 UTC that day)
BASE = {"display_name": "Ada Lovelace", "app_url": "https://app.attendwise.test",
        "unsubscribe_url": "https://app.attendwise.test/unsubscribe/tok123"}
CONTEXT: dict[str, dict[str, Any]] = {
    "email_verification": {"link": "https://app.attendwise.test/verify?token=v1"},
    "password_reset": {"link": "https://app.attendwise.test/reset?token=r1"},
    "checkin_succeeded": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC,
                          "scanned_at": "2026-03-29T07:56:30+00:00", "gate": "North door"},
    "checkin_failed": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC,
                       "scanned_at": "2026-03-29T07:56:30+00:00", "reason": "FACE_MISMATCH"},
    "session_reminder": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC,
                         "location": "Studio 2, Kastanienallee 12", "minutes_before": 1440},
    "session_changed": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC,
                        "previous_start": "2026-03-28T09:00:00+00:00", "location": "Studio 3"},
    "session_cancelled": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC,
                          "reason": "The teacher is ill."},
    "join_approved": {"community_name": "Berlin Runners"},
    "reply_to_post": {"replier_name": "Grace Hopper", "comment_excerpt": "Count me in!",
                      "post_excerpt": "Who is up for a long run on Sunday?"},
    "waitlist_promoted": {"session_title": "Morning Yoga", "session_start": BERLIN_SUMMER_8_UTC},
}


def context(kind: str, **changes: Any) -> dict[str, Any]:
    unsubscribe = None if kind in TRANSACTIONAL else BASE["unsubscribe_url"]
    return {**BASE, "unsubscribe_url": unsubscribe, **CONTEXT[kind], **changes}


def test_the_sample_contexts_cover_every_kind() -> None:
    assert set(CONTEXT) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_for_email(kind: str) -> None:
    r = render(kind, "email", context(kind), locale="en", time_zone="Europe/Berlin")
    assert r.subject and "\n" not in r.subject
    assert r.text.startswith("Hello Ada Lovelace,")
    assert r.html is not None and r.html.lstrip().startswith("<!DOCTYPE html>") and "Ada Lovelace" in r.html
    assert "{{" not in r.text + r.html


@pytest.mark.parametrize("channel", ["sms", "push"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_short_for_sms_and_push(kind: str, channel: str) -> None:
    r = render(kind, channel, context(kind), locale="en", time_zone="Europe/Berlin")
    assert r.subject and r.html is None
    assert 0 < len(r.text) < SHORT_LIMIT and "\n" not in r.text


def test_short_bodies_stay_short_with_long_values() -> None:
    long = "Very long session title " * 30
    r = render("session_reminder", "sms", context("session_reminder", session_title=long, location=long),
               locale="en", time_zone="Europe/Berlin")
    assert len(r.text) <= SHORT_LIMIT


def test_times_are_in_the_readers_zone_and_locale() -> None:
    en = render("session_reminder", "email", context("session_reminder"), locale="en", time_zone="Europe/Berlin")
    assert "March 29, 2026" in en.text and "10:00 AM" in en.text and "Europe/Berlin" in en.text
    de = render("session_reminder", "email", context("session_reminder"), locale="de", time_zone="Europe/Berlin")
    assert "Sonntag, 29. März 2026" in de.text and "10:00" in de.text and "Europe/Berlin" in de.html
    ny = render("session_reminder", "sms", context("session_reminder"), locale="en_US", time_zone="America/New_York")
    assert "4:00 AM" in ny.text and "America/New_York" in ny.text


def test_unknown_locale_falls_back_to_english_and_unknown_zone_to_utc() -> None:
    r = render("waitlist_promoted", "email", context("waitlist_promoted"), locale="xx-nowhere",
               time_zone="Mars/Olympus_Mons")
    assert "Sunday, March 29, 2026" in r.text and "8:00 AM (UTC)" in r.text


def test_reminder_says_how_soon() -> None:
    day = render("session_reminder", "push", context("session_reminder"), locale="en", time_zone="UTC")
    hour = render("session_reminder", "push", context("session_reminder", minutes_before=60), locale="en",
                  time_zone="UTC")
    assert "starts in 24 hours" in day.subject and "starts in 1 hour" in hour.text and "1 hours" not in hour.text


@pytest.mark.parametrize("code", ["FACE_MISMATCH", "NO_FACE", "TICKET_ALREADY_USED", "TICKET_EXPIRED",
                                  "OUTSIDE_WINDOW", "VERIFICATION_TIMEOUT", "SOMETHING_NEW"])
def test_checkin_failure_shows_the_code_and_a_sentence(code: str) -> None:
    for channel in ("email", "sms"):
        r = render("checkin_failed", channel, context("checkin_failed", reason=code), locale="en", time_zone="UTC")
        assert code in r.text
        assert (GENERIC_FAILURE in r.text) is (code == "SOMETHING_NEW")  # common codes are explained


def test_html_escapes_what_users_wrote_and_text_keeps_it() -> None:
    evil = "<script>alert(1)</script>"
    r = render("reply_to_post", "email", context("reply_to_post", display_name=evil, comment_excerpt=evil),
               locale="en", time_zone="UTC")
    assert "<script>" not in (r.html or "") and "&lt;script&gt;alert(1)&lt;/script&gt;" in (r.html or "")
    assert evil in r.text  # plain text is not HTML: shown as written


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in TRANSACTIONAL])
def test_non_transactional_email_has_an_unsubscribe_link(kind: str) -> None:
    r = render(kind, "email", context(kind), locale="en", time_zone="UTC")
    assert BASE["unsubscribe_url"] in r.text
    assert f'href="{BASE["unsubscribe_url"]}"' in (r.html or "") and "Unsubscribe" in (r.html or "")


@pytest.mark.parametrize("kind", sorted(TRANSACTIONAL))
def test_transactional_email_has_no_unsubscribe_link(kind: str) -> None:
    for unsubscribe in (None, BASE["unsubscribe_url"]):  # not even when one is passed by mistake
        r = render(kind, "email", context(kind, unsubscribe_url=unsubscribe), locale="en", time_zone="UTC")
        assert "unsubscribe" not in r.text.lower() and "unsubscribe" not in (r.html or "").lower()


def test_password_reset_says_when_it_expires_and_that_it_can_be_ignored() -> None:
    r = render("password_reset", "email", context("password_reset"), locale="en", time_zone="UTC")
    assert "expires in 1 hour" in r.text and "ignore" in r.text
    assert CONTEXT["password_reset"]["link"] in r.text and CONTEXT["password_reset"]["link"] in (r.html or "")


def test_a_missing_context_key_raises() -> None:
    ctx = context("session_changed")
    del ctx["previous_start"]
    with pytest.raises(jinja2.UndefinedError):
        render("session_changed", "email", ctx, locale="en", time_zone="UTC")


def test_unknown_kind_or_channel_is_refused() -> None:
    with pytest.raises(ValueError):
        render("birthday", "email", context("join_approved"), locale="en", time_zone="UTC")
    with pytest.raises(ValueError):
        render("join_approved", "fax", context("join_approved"), locale="en", time_zone="UTC")

"""Each line of a check-in's story (`attendwise audit checkins`) says what
happened in words, with the event's own values."""

from __future__ import annotations

import string

import pytest

from domain.checkin_history import STORY_EVENTS, SUMMARIES, USER_EVENTS, entry_of
from domain.envelope import EventEnvelope


def envelope(event_type: str, data: dict) -> EventEnvelope:
    return EventEnvelope(position=7, event_id="e", event_type=event_type, context="attendance", aggregate_id="agg-1",
                         aggregate_version=1, timestamp="2026-11-28T10:00:00+00:00", schema_version=1,
                         actor="user:u", command_id="c", data=data)


@pytest.mark.parametrize("event_type", sorted(STORY_EVENTS - USER_EVENTS))
def test_every_step_of_a_story_is_told_in_words_with_its_values(event_type: str) -> None:
    named = {f for _, f, _, _ in string.Formatter().parse(SUMMARIES.get(event_type, "")) if f}
    data = {name: f"<{name}>" for name in named | {"reason", "gate", "direction", "device_id"}}
    line = entry_of(envelope(event_type, data)).as_dict()["summary"]
    assert line != event_type
    for name in named - {"nonce_ref"}:  # the nonce is shown by reference, never itself
        assert f"<{name}>" in line


def test_a_value_the_event_lacks_reads_none_rather_than_failing() -> None:
    line = entry_of(envelope("NotificationSent", {"attempt": 2})).as_dict()["summary"]
    assert line == "notification sent via None (attempt 2)"

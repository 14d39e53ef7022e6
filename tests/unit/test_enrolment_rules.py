"""Liveness and enrolment rules, on measured numbers (no model needed)."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.enrolment import (FAILURES_ALLOWED, FRONT_MAX_YAW, SMILE_FLOOR, SMILE_GAIN, TURN_MIN_YAW, EnrolmentRefused,
                              FaceEnrolment, FrameMeasures, LivenessSession, draw_challenges, judge_frame)

NOW = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
THRESHOLD = 0.4


@given(st.integers())
def test_challenges_start_with_front_and_have_at_least_three_distinct(seed: int) -> None:
    drawn = draw_challenges(random.Random(seed))
    assert drawn[0] == "front" and len(drawn) >= 3 and len(set(drawn)) == len(drawn)
    assert set(drawn) <= {"front", "turn_left", "turn_right", "smile"}


def frame(yaw: float = 0.0, mouth: float = 0.85, distance: float | None = 0.1) -> FrameMeasures:
    return FrameMeasures(yaw, mouth, distance)


@pytest.mark.parametrize("challenge, measures, reason", [
    ("front", frame(yaw=0.0, distance=None), None),
    ("front", frame(yaw=FRONT_MAX_YAW + 0.05, distance=None), "wrong_pose"),
    ("turn_left", frame(yaw=TURN_MIN_YAW + 0.01), None),
    ("turn_left", frame(yaw=-(TURN_MIN_YAW + 0.1)), "wrong_pose"),  # the other way
    ("turn_left", frame(yaw=0.05), "wrong_pose"),  # not far enough
    ("turn_right", frame(yaw=-(TURN_MIN_YAW + 0.01)), None),
    ("turn_right", frame(yaw=TURN_MIN_YAW + 0.01, distance=THRESHOLD + 0.1), "different_person"),
    ("smile", frame(mouth=0.85 * SMILE_GAIN + 0.01), None),
    ("smile", frame(mouth=0.85 * 1.02), "not_smiling"),
])
def test_each_challenge_is_judged_on_the_frame(challenge: str, measures: FrameMeasures, reason: str | None) -> None:
    assert judge_frame(challenge, measures, front_mouth=0.85, threshold=THRESHOLD) == reason


def test_a_smile_must_also_clear_an_absolute_floor() -> None:
    assert judge_frame("smile", frame(mouth=SMILE_FLOOR - 0.01), front_mouth=0.5, threshold=THRESHOLD) == "not_smiling"


def session(challenges: list[str]) -> LivenessSession:
    return LivenessSession(user_id="u", challenges=challenges, nonce="n", expires_at=NOW + dt.timedelta(minutes=3))


def test_frames_answer_the_challenges_in_order_and_the_session_is_used_once() -> None:
    s = session(["front", "turn_left", "smile"])
    assert s.check_open("u", "n", NOW) == "front"
    assert s.answer(frame(yaw=0.3, distance=None), None, THRESHOLD) == "wrong_pose"  # a turn is not the front
    assert s.current == "front"
    assert s.answer(frame(distance=None), None, THRESHOLD) is None
    assert s.answer(frame(yaw=0.0), None, THRESHOLD) == "wrong_pose"  # the same frontal photo replayed
    assert s.answer(frame(yaw=0.25), None, THRESHOLD) is None and s.current == "smile"
    assert s.answer(frame(mouth=1.0), None, THRESHOLD) is None and s.current is None
    s.finish(True)
    with pytest.raises(EnrolmentRefused) as used:
        s.check_open("u", "n", NOW)
    assert used.value.code == "LIVENESS_SESSION_USED"


@pytest.mark.parametrize("user, nonce, at, code", [
    ("someone-else", "n", NOW, "LIVENESS_SESSION_INVALID"),
    ("u", "wrong", NOW, "LIVENESS_SESSION_INVALID"),
    ("u", "n", NOW + dt.timedelta(minutes=4), "LIVENESS_SESSION_EXPIRED"),
])
def test_a_session_is_for_its_owner_with_its_nonce_within_three_minutes(user: str, nonce: str, at: dt.datetime,
                                                                        code: str) -> None:
    with pytest.raises(EnrolmentRefused) as refused:
        session(["front", "smile", "turn_left"]).check_open(user, nonce, at)
    assert refused.value.code == code


def test_five_failures_within_three_minutes_lock_enrolment_for_a_while() -> None:
    e = FaceEnrolment(user_id=str(uuid.uuid4()))
    assert not any(e.count_failure(NOW + dt.timedelta(minutes=4 * i)) for i in range(FAILURES_ALLOWED))  # spread out
    locked = [e.count_failure(NOW + dt.timedelta(hours=1, seconds=i)) for i in range(FAILURES_ALLOWED)]
    assert locked == [False] * (FAILURES_ALLOWED - 1) + [True]
    with pytest.raises(EnrolmentRefused) as refused:
        e.check_not_locked(NOW + dt.timedelta(hours=1, minutes=5))
    assert refused.value.code == "ENROLMENT_LOCKED"
    e.check_not_locked(NOW + dt.timedelta(hours=2))


def test_a_template_is_only_compared_by_the_model_version_that_made_it() -> None:
    e = FaceEnrolment(user_id=str(uuid.uuid4()))
    e.enrol("AAAA", "Facenet512", "v1", 0.4, uuid.uuid4())
    assert e.template_for("v1") == "AAAA" and e.template_for("v2") is None
    e.mark_stale("v2")
    assert e.template is None and type(e.collect_events()[-1]).__name__ == "MarkedStale"

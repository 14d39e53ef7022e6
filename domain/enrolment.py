"""Face enrolment through a liveness challenge, and the enrolled template.

A `LivenessSession` is drawn by the server: an ordered list of challenges
(`front` first, then at least two of `turn_left`, `turn_right`, `smile` in a
random order), a nonce and an expiry. Frames must answer the challenges in
order, within the window, each from the same person as the front frame;
the session is used once. Its rules are functions of measured numbers (yaw
and mouth ratios from landmarks, the embedding distance to the front frame),
so they are tested without a model.

A `FaceEnrolment` (one per member) holds the frontal embedding, encrypted
with the member's key and never decrypted outside the aggregate, with the
model name, version and threshold it was made with. A template of another
model version is never compared: the enrolment is stale until renewed.
Five failed frames within three minutes lock enrolment for a while.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import Refused

CHALLENGES = ("front", "turn_left", "turn_right", "smile")
SESSION_LIFETIME = dt.timedelta(minutes=3)
FRONT_MAX_YAW = 0.08  # |yaw ratio| of a frontal face (about 7 degrees)
TURN_MIN_YAW = 0.12  # |yaw ratio| a turn must reach (about 10 degrees; 0.17 is about 14)
SMILE_GAIN = 1.12  # mouth width over eye distance, relative to the session's front frame
SMILE_FLOOR = 0.80  # and at least this, absolutely
FAILURES_ALLOWED = 5  # failed frames within FAILURE_WINDOW before enrolment is locked
FAILURE_WINDOW = dt.timedelta(minutes=3)
LOCK_FOR = dt.timedelta(minutes=15)


class EnrolmentRefused(Refused):
    """An enrolment step refused; `code` says why."""


@dataclass(frozen=True)
class FrameMeasures:
    """What the face model measured on one frame (one face in it)."""

    yaw: float  # nose offset from the eye midpoint over the eye distance; > 0: turned to the person's left
    mouth: float  # mouth width over eye distance
    distance_to_front: float | None  # cosine distance to the front frame's embedding (None for the front frame)


def draw_challenges(rng: random.Random | None = None) -> list[str]:
    """`front`, then two or three of the others in a random order."""
    rng = rng or random.SystemRandom()
    others = [c for c in CHALLENGES if c != "front"]
    return ["front", *rng.sample(others, rng.choice((2, 3)))]


def judge_frame(challenge: str, m: FrameMeasures, front_mouth: float | None, threshold: float) -> str | None:
    """Why this frame fails its challenge (a reason code), or None when it passes.
    Quality refusals (no face, several faces, too small, too dark, blurred)
    are decided by the face model before the measures exist."""
    if m.distance_to_front is not None and m.distance_to_front > threshold:
        return "different_person"
    if challenge == "front":
        return None if abs(m.yaw) <= FRONT_MAX_YAW else "wrong_pose"
    if challenge == "turn_left":
        return None if m.yaw >= TURN_MIN_YAW else "wrong_pose"
    if challenge == "turn_right":
        return None if m.yaw <= -TURN_MIN_YAW else "wrong_pose"
    if challenge == "smile":
        if abs(m.yaw) > TURN_MIN_YAW:
            return "wrong_pose"
        base = front_mouth or 0.0
        return None if m.mouth >= max(SMILE_GAIN * base, SMILE_FLOOR) else "not_smiling"
    raise ValueError(f"unknown challenge {challenge}")


# ------------------------------------------------------------------ session
class LivenessSession(AttendWiseAggregate):
    CONTEXT = "enrolment"

    class Started(Aggregate.Created):
        user_id: str
        challenges: list[str]
        nonce: str
        expires_at: dt.datetime

    @event(Started)
    def __init__(self, user_id: str, challenges: list[str], nonce: str, expires_at: dt.datetime) -> None:
        self.user_id, self.challenges, self.nonce, self.expires_at = user_id, challenges, nonce, expires_at
        self.passed = 0  # how many challenges are done, in order
        self.front_mouth: float | None = None
        self.front_embedding: str | None = None
        self.finished = False

    @property
    def current(self) -> str | None:
        return self.challenges[self.passed] if self.passed < len(self.challenges) else None

    def check_open(self, user_id: str, nonce: str, now: dt.datetime) -> str:
        """The challenge the next frame must answer."""
        if self.user_id != user_id or not _same(self.nonce, nonce):
            raise EnrolmentRefused("LIVENESS_SESSION_INVALID", "this liveness session is not yours", status=403)
        if self.finished:
            raise EnrolmentRefused("LIVENESS_SESSION_USED", "this liveness session is over; start a new one")
        if now > self.expires_at:
            raise EnrolmentRefused("LIVENESS_SESSION_EXPIRED", "this liveness session expired; start a new one",
                                   status=410)
        return self.current  # type: ignore[return-value]

    class ChallengePassed(Aggregate.Event):
        challenge: str
        yaw: float
        mouth: float
        distance_to_front: float | None

    class ChallengeFailed(Aggregate.Event):
        challenge: str
        reason: str

    def answer(self, m: FrameMeasures | None, failure: str | None, threshold: float) -> str | None:
        """Judge one frame for the current challenge; returns the failure
        reason, or None when it passed."""
        challenge = self.current
        assert challenge is not None
        reason = failure or judge_frame(challenge, m, self.front_mouth, threshold)  # type: ignore[arg-type]
        if reason:
            self._failed(challenge, reason)
        else:
            self._passed(challenge, m.yaw, m.mouth, m.distance_to_front)  # type: ignore[union-attr]
        return reason

    @event(ChallengePassed)
    def _passed(self, challenge: str, yaw: float, mouth: float, distance_to_front: float | None) -> None:
        if challenge == "front":
            self.front_mouth = mouth
        self.passed += 1

    @event(ChallengeFailed)
    def _failed(self, challenge: str, reason: str) -> None:
        pass

    class FrontCaptured(Aggregate.Event):
        """The front frame's embedding: later frames must match it, and it
        becomes the template. Sealed like the template."""

        PERSONAL = ("embedding",)
        SECRET = ("embedding",)
        SUBJECT = "user_id"
        user_id: str
        embedding: str  # base64 of the float32 embedding

    def capture_front(self, embedding: str) -> None:
        self._front_captured(self.user_id, embedding)

    @event(FrontCaptured)
    def _front_captured(self, user_id: str, embedding: str) -> None:
        self.front_embedding = embedding

    class Finished(Aggregate.Event):
        enrolled: bool

    def finish(self, enrolled: bool) -> None:
        self._finished(enrolled)

    @event(Finished)
    def _finished(self, enrolled: bool) -> None:
        self.finished = True


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


# ------------------------------------------------------------------ enrolment
def enrolment_id(user_id: uuid.UUID | str) -> uuid.UUID:
    return uuid.uuid5(uuid.UUID(str(user_id)), "face-enrolment")


class FaceEnrolment(AttendWiseAggregate):
    """A member's face template (or none yet), and their failed attempts."""

    CONTEXT = "enrolment"

    class Opened(Aggregate.Created):
        user_id: str

    @event(Opened)
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.template: str | None = None
        self.model: str | None = None
        self.model_version: str | None = None
        self.threshold: float | None = None
        self.failures: list[dt.datetime] = []
        self.locked_until: dt.datetime | None = None

    @staticmethod
    def create_id(user_id: str) -> uuid.UUID:
        return enrolment_id(user_id)

    class Enrolled(Aggregate.Event):
        PERSONAL = ("template",)
        SECRET = ("template",)  # sealed in every copy of the log; only this aggregate reads it
        SUBJECT = "user_id"
        user_id: str
        template: str  # base64 of the float32 embedding
        model: str
        model_version: str
        threshold: float
        session_id: str

    def enrol(self, template: str, model: str, model_version: str, threshold: float, session_id: uuid.UUID) -> None:
        self._enrolled(self.user_id, template, model, model_version, threshold, str(session_id))

    @event(Enrolled)
    def _enrolled(self, user_id: str, template: str, model: str, model_version: str, threshold: float,
                  session_id: str) -> None:
        self.template, self.model, self.model_version, self.threshold = template, model, model_version, threshold
        self.failures = []

    def template_for(self, model_version: str) -> str | None:
        """The template, only if made by this model version (never compare across versions)."""
        return self.template if self.template and self.model_version == model_version else None

    class FrameRefused(Aggregate.Event):
        at: dt.datetime

    class Locked(Aggregate.Event):
        until: dt.datetime

    def count_failure(self, now: dt.datetime) -> bool:
        """Record a failed frame; returns True if enrolment is now locked."""
        self._frame_refused(now)
        recent = [t for t in self.failures if now - t <= FAILURE_WINDOW]
        if len(recent) >= FAILURES_ALLOWED:
            self._locked(now + LOCK_FOR)
            return True
        return False

    @event(FrameRefused)
    def _frame_refused(self, at: dt.datetime) -> None:
        self.failures = [*self.failures[-FAILURES_ALLOWED:], at]

    @event(Locked)
    def _locked(self, until: dt.datetime) -> None:
        self.locked_until, self.failures = until, []

    def check_not_locked(self, now: dt.datetime) -> None:
        if self.locked_until is not None and now < self.locked_until:
            raise EnrolmentRefused("ENROLMENT_LOCKED", f"too many failed frames; try again after "
                                   f"{self.locked_until.isoformat()}", status=429)

    class MarkedStale(Aggregate.Event):
        """The face model changed: this template is not compared any more."""

        model_version: str

    def mark_stale(self, current_version: str) -> None:
        if self.template and self.model_version != current_version:
            self._marked_stale(current_version)

    @event(MarkedStale)
    def _marked_stale(self, model_version: str) -> None:
        self.template = None

"""Enrolment handlers: a liveness session, one frame per challenge, and the
template that check-in compares with. The face model is the `FaceAnalyzer`
port (in process, or workers over NATS)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from commands.loading import Loader
from commands.messages import CommandContext
from domain.authorization import Forbidden, check_signed_in
from domain.enrolment import (SESSION_LIFETIME, EnrolmentRefused, FaceEnrolment, FrameMeasures, LivenessSession,
                              draw_challenges, enrolment_id)


@dataclass(frozen=True)
class LivenessStart:
    session_id: uuid.UUID
    challenges: list[str]
    nonce: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class FrameOutcome:
    status: str  # CHALLENGE_FAILED_RETRY, CHALLENGE_PASSED_CONTINUE or ENROLLED
    challenge: str | None  # the challenge to answer next (the same one after a failure)
    reason: str | None = None  # why the frame failed
    model: str | None = None
    model_version: str | None = None


class EnrolmentHandlers(Loader):
    """Mixed into the `AttendWise` application."""

    save_stamped: Any
    analyzer: Any  # FaceAnalyzer

    def _me(self, ctx: CommandContext) -> str:
        check_signed_in(ctx.user_id, ctx.roles)
        if ctx.user_id is None:
            raise Forbidden("a face is enrolled by the person it belongs to")
        return str(ctx.user_id)

    def _enrolment(self, user_id: str) -> FaceEnrolment:
        return self._find(enrolment_id(user_id), FaceEnrolment) or FaceEnrolment(user_id=user_id)

    def start_liveness(self, ctx: CommandContext, now: dt.datetime) -> LivenessStart:
        me = self._me(ctx)
        self._enrolment(me).check_not_locked(now)
        session = LivenessSession(user_id=me, challenges=draw_challenges(), nonce=secrets.token_urlsafe(16),
                                  expires_at=now + SESSION_LIFETIME)
        self.save_stamped(ctx, session)
        return LivenessStart(session.id, session.challenges, session.nonce, session.expires_at)

    def enrol_frame(self, session_id: uuid.UUID, nonce: str, image: bytes, mirrored: bool, ctx: CommandContext,
                    now: dt.datetime) -> FrameOutcome:
        me = self._me(ctx)
        session: LivenessSession = self._get(session_id, LivenessSession, "liveness session")
        session.check_open(me, nonce, now)
        enrolment = self._enrolment(me)
        enrolment.check_not_locked(now)
        if self.analyzer is None:
            raise EnrolmentRefused("FACE_MODEL_UNAVAILABLE", "no face model is installed here "
                                   "(run `attendwise ml provision`)", status=503)
        frame = self.analyzer.analyse(image, mirrored)  # VerifierUnavailable: nothing recorded, retry
        measures = None
        if frame.failure is None:
            distance = (None if session.front_embedding is None else
                        self.analyzer.distance(base64.b64decode(session.front_embedding), frame.embedding))
            measures = FrameMeasures(frame.yaw, frame.mouth, distance)
        challenge = session.current
        reason = session.answer(measures, frame.failure, self.analyzer.threshold)
        if reason:
            locked = enrolment.count_failure(now)
            if locked:
                session.finish(False)
            self.save_stamped(ctx, session, enrolment)
            if locked:
                raise EnrolmentRefused("ENROLMENT_LOCKED", "too many failed frames; try again later", status=429)
            return FrameOutcome("CHALLENGE_FAILED_RETRY", challenge, reason)
        if challenge == "front":
            session.capture_front(base64.b64encode(frame.embedding).decode())
        if session.current is not None:
            self.save_stamped(ctx, session)
            return FrameOutcome("CHALLENGE_PASSED_CONTINUE", session.current)
        enrolment.enrol(session.front_embedding, self.analyzer.model, self.analyzer.model_version,  # type: ignore[arg-type]
                        self.analyzer.threshold, session.id)
        session.finish(True)
        self.save_stamped(ctx, session, enrolment)
        return FrameOutcome("ENROLLED", None, model=self.analyzer.model, model_version=self.analyzer.model_version)

    def face_template(self, user_id: str) -> bytes | None:
        """The member's template for the current model (None: not enrolled, or stale)."""
        enrolment = self._find(enrolment_id(user_id), FaceEnrolment)
        if enrolment is None or self.analyzer is None:
            return None
        template = enrolment.template_for(self.analyzer.model_version)
        try:
            return base64.b64decode(template, validate=True) if template else None
        except ValueError:  # erased with the member's key
            return None


class EnrolledTemplates:
    """`FaceTemplates` read from the members' enrolments."""

    def __init__(self, app: EnrolmentHandlers) -> None:
        self.app = app

    def template(self, user_id: str) -> bytes | None:
        return self.app.face_template(user_id)

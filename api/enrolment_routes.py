"""Command API for face enrolment through a liveness challenge."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field

from api.deps import Deps, Principal
from domain.errors import InvalidInput

router = APIRouter(tags=["enrolment"])
MAX_FRAME_BYTES = 8 * 1024 * 1024


class Challenge(BaseModel):
    session_id: uuid.UUID
    challenges: list[Literal["front", "turn_left", "turn_right", "smile"]] = Field(
        description="answer them in this order, one frame each")
    nonce: str
    expires_at: dt.datetime


class FrameOut(BaseModel):
    status: Literal["CHALLENGE_FAILED_RETRY", "CHALLENGE_PASSED_CONTINUE", "ENROLLED"]
    challenge: str | None = Field(description="the challenge the next frame answers (null once enrolled)")
    reason: str | None = Field(None, description="why the frame failed: no_face, several_faces, too_small, "
                               "too_dark, blurred, wrong_pose, not_smiling, different_person")
    model: str | None = None
    model_version: str | None = None


@router.get("/users/enroll-challenge", response_model=Challenge)
def enroll_challenge(c: Deps, who: Principal) -> Challenge:
    """Start a liveness session (valid 3 minutes, used once)."""
    s = c.app.start_liveness(who, c.clock())
    return Challenge(session_id=s.session_id, challenges=s.challenges, nonce=s.nonce, expires_at=s.expires_at)


@router.post("/users/me/enroll-face", response_model=FrameOut)
async def enroll_face(c: Deps, who: Principal,
                      session_id: Annotated[uuid.UUID, Form()],
                      nonce: Annotated[str, Form(max_length=100)],
                      image: Annotated[UploadFile, File(description="one frame (JPEG, PNG or WebP)")],
                      mirrored: Annotated[bool, Form(description="a front camera's mirrored image")] = False,
                      ) -> FrameOut:
    """One frame for the current challenge."""
    frame = await image.read(MAX_FRAME_BYTES + 1)
    if len(frame) > MAX_FRAME_BYTES:
        raise InvalidInput(f"a frame may have at most {MAX_FRAME_BYTES:,} bytes", field="image")
    out = await asyncio.to_thread(c.app.enrol_frame, session_id, nonce, frame, mirrored, who, c.clock())
    return FrameOut(status=out.status, challenge=out.challenge, reason=out.reason, model=out.model,
                    model_version=out.model_version)

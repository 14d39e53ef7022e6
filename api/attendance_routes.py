"""Command API for attendance: places, tickets, check-in scans, host overrides."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.tickets import qr_png, qr_svg
from api.deps import Deps, Principal
from commands.attendance import ScanResult
from commands.messages import (AnnulCheckIn, GiveUpPlace, MarkAttendance, ReservePlace, ResolveConflict, Scan,
                               SetCheckInPolicy)
from domain.errors import DomainError, InvalidInput

router = APIRouter(tags=["attendance"])
MAX_PHOTO_BYTES = 4 * 1024 * 1024
MAX_OFFLINE_SCANS = 500
Scope = Literal["session", "following", "series"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaceIn(Strict):
    scope: Scope = Field("session", description="this session, this and all following, or the whole series")


class Places(BaseModel):
    standings: dict[str, Literal["confirmed", "waitlisted"]] = Field(description="session id -> standing")


class GivenUp(BaseModel):
    promoted: list[str] = Field(description="who took the freed places from the waitlist")


class PolicyIn(Strict):
    policy: Literal["face", "qr"]
    opens_minutes: int = Field(60, ge=0, le=24 * 60, description="check-in opens this long before the start")
    closes_minutes: int = Field(60, ge=0, le=24 * 60, description="and closes this long after the end")


class TicketOut(BaseModel):
    token: str = Field(description="the QR code's content: a signed JWT (verify with /.well-known/jwks.json)")


class Face(BaseModel):
    distance: float | None
    threshold: float | None
    confidence: float | None
    model: str | None
    model_version: str | None


class ScanOut(BaseModel):
    checkin_id: uuid.UUID
    session_id: str
    user_id: str
    outcome: Literal["succeeded", "failed", "pending", "conflict", "annulled"]
    reason: str
    face: Face | None = None


class OfflineScan(Strict):
    token: str = Field(max_length=4096)
    scanned_at: dt.datetime = Field(description="the device's clock when it scanned (with offset)")
    direction: Literal["in", "out"] = "in"


class OfflineBatch(Strict):
    session_id: uuid.UUID | None = None
    device_id: str = Field(min_length=1, max_length=100)
    gate: str = Field("main", min_length=1, max_length=100)
    scans: list[OfflineScan] = Field(min_length=1, max_length=MAX_OFFLINE_SCANS)


class OfflineResult(BaseModel):
    outcome: str
    reason: str
    checkin_id: uuid.UUID | None = None


class OfflineOut(BaseModel):
    results: list[OfflineResult]


class AttendanceIn(Strict):
    present: bool
    reason: str = Field(min_length=1, max_length=500)


class ReasonIn(Strict):
    reason: str = Field(min_length=1, max_length=500)


class ResolveIn(Strict):
    accept: bool


def _out(r: ScanResult) -> ScanOut:
    face = None
    if r.face is not None:
        face = Face(distance=r.face.distance, threshold=r.face.threshold, confidence=r.face.confidence,
                    model=r.face.model, model_version=r.face.model_version)
    return ScanOut(checkin_id=r.checkin_id, session_id=r.session_id, user_id=r.user_id, outcome=r.outcome,
                   reason=r.reason, face=face)


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{field} needs an offset (e.g. Z)", field=field)
    return value


# ---------------------------------------------------------------- places
@router.post("/sessions/{session_id}/places", response_model=Places)
def reserve_place(session_id: uuid.UUID, body: PlaceIn, c: Deps, who: Principal) -> Places:
    """A place if one is free, else a place on the waitlist (promoted, in
    order, when someone gives theirs up)."""
    return Places(standings=c.app.reserve_place(ReservePlace(session_id, body.scope), who, c.clock()))


@router.delete("/sessions/{session_id}/places", response_model=GivenUp)
def give_up_place(session_id: uuid.UUID, c: Deps, who: Principal, scope: Scope = "session") -> GivenUp:
    return GivenUp(promoted=c.app.give_up_place(GiveUpPlace(session_id, scope), who, c.clock()))


@router.put("/sessions/{session_id}/checkin-policy", status_code=204)
def set_policy(session_id: uuid.UUID, body: PolicyIn, c: Deps, who: Principal) -> Response:
    c.app.set_checkin_policy(SetCheckInPolicy(session_id, body.policy, body.opens_minutes, body.closes_minutes), who)
    return Response(status_code=204)


# ---------------------------------------------------------------- tickets
TICKET_FORMATS = {200: {"content": {"image/png": {}, "image/svg+xml": {}},
                        "description": "the ticket as JSON, or its QR code"}}


@router.get("/sessions/{session_id}/ticket", response_model=TicketOut, responses=TICKET_FORMATS)
def ticket(session_id: uuid.UUID, c: Deps, who: Principal,
           format: Literal["json", "png", "svg"] = "json") -> Response | TicketOut:
    """A fresh ticket for your place: asking again makes the previous one void."""
    token = c.app.issue_ticket(session_id, who, c.clock())
    headers = {"Cache-Control": "no-store"}
    if format == "png":
        return Response(qr_png(token), media_type="image/png", headers=headers)
    if format == "svg":
        return Response(qr_svg(token), media_type="image/svg+xml", headers=headers)
    return JSONResponse(TicketOut(token=token).model_dump(), headers=headers)


# ---------------------------------------------------------------- scans
@router.post("/checkin", response_model=ScanOut, responses={202: {"model": ScanOut, "description": "pending"}})
async def check_in(c: Deps, who: Principal,
                   token: Annotated[str, Form(max_length=4096)],
                   device_id: Annotated[str, Form(min_length=1, max_length=100)],
                   gate: Annotated[str, Form(min_length=1, max_length=100)] = "main",
                   direction: Annotated[Literal["in", "out"], Form()] = "in",
                   scanned_at: Annotated[dt.datetime | None, Form()] = None,
                   session_id: Annotated[uuid.UUID | None, Form(description="the session this scanner admits to")] = None,
                   image: Annotated[UploadFile | None, File(description="a fresh photo (face check-in)")] = None,
                   ) -> Response:
    """Scan a ticket (a kiosk run by one of the session's hosts). Refusals
    are problem+json with a stable code; every attempt is recorded."""
    import asyncio

    photo = None
    if image is not None:
        photo = await image.read(MAX_PHOTO_BYTES + 1)
        if len(photo) > MAX_PHOTO_BYTES:
            raise InvalidInput(f"the photo may have at most {MAX_PHOTO_BYTES:,} bytes", field="image")
    scan = Scan(token=token, device_id=device_id, gate=gate, direction=direction,
                scanned_at=_aware(scanned_at, "scanned_at"), image=photo, session_id=session_id)
    result = await asyncio.to_thread(c.app.check_in, scan, who, c.clock())
    return JSONResponse(_out(result).model_dump(mode="json"), status_code=202 if result.outcome == "pending" else 200)


@router.post("/checkin/offline", response_model=OfflineOut)
def upload_offline_scans(body: OfflineBatch, c: Deps, who: Principal) -> OfflineOut:
    """Scans a kiosk made while offline (it checked signatures itself): each
    keeps its scan time; a ticket accepted by two kiosks becomes a conflict
    for the hosts to resolve, never a double entry. Uploading the same scans
    again gives the same answers."""
    results = []
    for s in body.scans:
        scan = Scan(token=s.token, device_id=body.device_id, gate=body.gate, direction=s.direction,
                    scanned_at=_aware(s.scanned_at, "scanned_at"), offline=True, session_id=body.session_id)
        try:
            r = c.app.check_in(scan, who, c.clock())
            results.append(OfflineResult(outcome=r.outcome, reason=r.reason, checkin_id=r.checkin_id))
        except DomainError as e:
            results.append(OfflineResult(outcome="failed", reason=e.code))
    return OfflineOut(results=results)


# ---------------------------------------------------------------- hosts
@router.put("/sessions/{session_id}/attendance/{user_id}", status_code=204)
def mark_attendance(session_id: uuid.UUID, user_id: uuid.UUID, body: AttendanceIn, c: Deps,
                    who: Principal) -> Response:
    """A host marks a member present or absent, with a reason (kept in the audit trail)."""
    c.app.mark_attendance(MarkAttendance(session_id, user_id, body.present, body.reason), who)
    return Response(status_code=204)


@router.post("/checkins/{checkin_id}/annul", status_code=204)
def annul(checkin_id: uuid.UUID, body: ReasonIn, c: Deps, who: Principal) -> Response:
    """Undo a mistaken check-in with a compensating event (it is never deleted)."""
    c.app.annul_checkin(AnnulCheckIn(checkin_id, body.reason), who)
    return Response(status_code=204)


@router.post("/checkins/{checkin_id}/resolve", status_code=204)
def resolve(checkin_id: uuid.UUID, body: ResolveIn, c: Deps, who: Principal) -> Response:
    """Settle a conflict between offline scans of one ticket."""
    c.app.resolve_conflict(ResolveConflict(checkin_id, body.accept), who)
    return Response(status_code=204)


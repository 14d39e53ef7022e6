"""Attendance handlers: places (RSVP), tickets, check-in scans, host overrides.

A scan is verified in this order, and every attempt, refused ones too, is
recorded as a `CheckIn` with its stable reason code, device, gate, the
device's scan time and the server's receive time:
1. the ticket's signature, audience and window (`TICKET_INVALID`,
   `NOT_YET_OPEN`, `TICKET_EXPIRED`), the session (`SESSION_CANCELLED`);
2. the nonce is used: an event on the `Ticket`, saved with the attempt, so the
   event store's version check lets one use win (`TICKET_ALREADY_USED`);
3. for face check-in, the member's enrolled template against the photo
   (`FACE_NOT_ENROLLED`, `NO_FACE`, `SEVERAL_FACES`, `IMAGE_*` for a photo
   the model will not read, a mismatch); a verifier
   that does not answer in time leaves the attempt pending, settled when the
   answer comes or failed by `fail_overdue` after the deadline.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from commands.loading import Loader
from commands.messages import (AnnulCheckIn, CommandContext, GiveUpPlace, MarkAttendance, ReservePlace,
                               ResolveConflict, Scan, SetCheckInPolicy)
from domain.attendance import (DIRECTIONS, CheckIn, CheckInRefused, NoPlace, Presence, Roster, Ticket, check_window,
                               new_nonce, presence_id, ticket_id)
from domain.authorization import check_is_host, check_signed_in
from domain.errors import ConcurrencyConflict, DomainError, InvalidInput
from domain.scheduling import Series, Session, SessionCancelled, session_id

log = structlog.get_logger("checkin")
SCOPES = ("session", "following", "series")
VERIFY_TIMEOUT = 5.0  # seconds a scan waits for the face verifier before answering "pending"
VERIFY_DEADLINE = dt.timedelta(minutes=2)  # a pending attempt older than this fails


@dataclass(frozen=True)
class ScanResult:
    checkin_id: uuid.UUID
    session_id: str
    user_id: str
    outcome: str  # succeeded, failed, pending, conflict
    reason: str
    face: Any = None  # the FaceVerdict, when a face was compared


class AttendanceHandlers(Loader):
    """Mixed into the `AttendWise` application."""

    save_stamped: Any
    tickets: Any  # TicketSigner
    verifier: Any  # FaceVerifier
    faces: Any  # FaceTemplates
    get_session: Any
    get_series: Any
    _existing_sessions: Any
    verify_timeout: float = VERIFY_TIMEOUT
    _verifications: concurrent.futures.ThreadPoolExecutor | None = None

    # --- places ---------------------------------------------------------
    def _in_scope(self, session: Session, scope: str, now: dt.datetime) -> list[Session]:
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}", field="scope")
        if scope == "session":
            return [session]
        series: Series = self.get_series(uuid.UUID(session.series_id))
        ids = [session_id(series.id, o.original_start) for o in series.occurrences()]
        found = self._existing_sessions(ids).values()
        return [s for s in found if not s.cancelled and s.start > now
                and (scope == "series" or s.start >= session.start)]

    def reserve_place(self, cmd: ReservePlace, ctx: CommandContext, now: dt.datetime) -> dict[str, str]:
        """Returns each session's standing: `confirmed` or `waitlisted`."""
        check_signed_in(ctx.user_id, ctx.roles)
        me = str(ctx.user_id)

        def work() -> tuple[dict[str, str], list[Any]]:
            out, rosters = {}, []
            session = self.get_session(cmd.session_id)
            if session.cancelled:
                raise SessionCancelled("this session is cancelled")
            for s in self._in_scope(session, cmd.scope, now):
                roster = self._find(Roster.create_id(str(s.id)), Roster) or Roster(session_id=str(s.id))
                out[str(s.id)] = roster.reserve(me, s.capacity)
                rosters.append(roster)
            return out, rosters
        return self._save_retrying(ctx, work)

    def give_up_place(self, cmd: GiveUpPlace, ctx: CommandContext, now: dt.datetime) -> list[str]:
        """Frees the places; returns who was promoted from the waitlist."""
        check_signed_in(ctx.user_id, ctx.roles)
        me = str(ctx.user_id)

        def work() -> tuple[list[str], list[Any]]:
            promoted, rosters = [], []
            for s in self._in_scope(self.get_session(cmd.session_id), cmd.scope, now):
                roster = self._find(Roster.create_id(str(s.id)), Roster)
                if roster is not None:
                    promoted += roster.give_up(me, s.capacity)
                    rosters.append(roster)
            return promoted, rosters
        return self._save_retrying(ctx, work)

    def set_checkin_policy(self, cmd: SetCheckInPolicy, ctx: CommandContext) -> None:
        session = self.get_session(cmd.session_id)
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        session.set_checkin_policy(cmd.policy, cmd.opens_minutes, cmd.closes_minutes)
        self.save_stamped(ctx, session)

    # --- tickets --------------------------------------------------------
    def issue_ticket(self, sid: uuid.UUID, ctx: CommandContext, now: dt.datetime) -> str:
        """A ticket (signed JWT) with a fresh nonce; an earlier one becomes void."""
        from adapters.tickets import TicketClaims

        check_signed_in(ctx.user_id, ctx.roles)
        session = self.get_session(sid)
        if session.cancelled:
            raise SessionCancelled("this session is cancelled")
        me = str(ctx.user_id)
        roster = self._find(Roster.create_id(str(session.id)), Roster)
        if roster is None or roster.standing(me) != "confirmed":
            raise NoPlace("take a place in this session first (a waitlisted place has no ticket yet)")
        opens, closes = session.checkin_window
        if now > closes:
            raise CheckInRefused("TICKET_EXPIRED", "check-in for this session has closed", status=410)

        def work() -> tuple[Ticket, list[Any]]:
            ticket = self._find(ticket_id(session.id, me), Ticket)
            if ticket is None:
                ticket = Ticket(session_id=str(session.id), user_id=me, nonce=new_nonce(), issued_at=now)
            else:
                ticket.reissue(now)
            return ticket, [ticket]
        ticket = self._save_retrying(ctx, work)
        return self.tickets.sign(TicketClaims(me, str(session.id), ticket.nonce, now, opens, closes))

    # --- scans ----------------------------------------------------------
    def check_in(self, scan: Scan, ctx: CommandContext, now: dt.datetime) -> ScanResult:
        """Raises `CheckInRefused` (or NoFace, SeveralFaces) after recording
        the refused attempt; returns the outcome otherwise."""
        check_signed_in(ctx.user_id, ctx.roles)
        if scan.direction not in DIRECTIONS:
            raise InvalidInput("direction must be in or out", field="direction")
        if scan.offline and scan.scanned_at is None:
            raise InvalidInput("an offline scan needs the device's scan time", field="scanned_at")
        at = scan.scanned_at if scan.offline and scan.scanned_at else now
        try:
            claims = self.tickets.read(scan.token)
        except CheckInRefused as e:  # forged or broken: recorded against no session (no dashboard spam)
            self._refused(scan, ctx, now, e.code)
            raise
        # the session, the ticket and the presence a scan needs, in one read of the event store
        sid = uuid.UUID(claims.session_id)
        session, ticket, presence = self._find_all((sid, Session), (ticket_id(sid, claims.user_id), Ticket),
                                                   (presence_id(sid, claims.user_id), Presence))
        try:
            claims.check_window(at)
        except CheckInRefused as e:
            if session is not None:
                check_is_host(ctx.user_id, ctx.roles, session.host_ids)
            self._refused(scan, ctx, now, e.code, claims.session_id, claims.user_id)
            raise
        if scan.session_id is not None and str(scan.session_id) != claims.session_id:
            self._refused(scan, ctx, now, "TICKET_INVALID", claims.session_id, claims.user_id)
            raise CheckInRefused("TICKET_INVALID", "this ticket is for another session", status=401)
        if session is None:
            self._refused(scan, ctx, now, "TICKET_INVALID", claims.session_id, claims.user_id)
            raise CheckInRefused("TICKET_INVALID", "this ticket is for no known session", status=401)
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)  # scanners are run by the session's hosts
        try:
            if session.cancelled:
                raise CheckInRefused("SESSION_CANCELLED", "this session is cancelled")
            check_window(at, *session.checkin_window)
        except CheckInRefused as refusal:
            self._refused(scan, ctx, now, refusal.code, claims.session_id, claims.user_id)
            raise
        policy = session.checkin_policy[0]
        by_face = policy == "face" and scan.direction == "in" and not scan.offline
        if by_face and not scan.image:
            raise InvalidInput("this session checks faces: send a photo with the ticket", field="image")

        for attempt in range(5):
            if attempt:  # after a lost race: what the winner left
                ticket = self._find(ticket_id(session.id, claims.user_id), Ticket)
                presence = self._presence(session.id, claims.user_id)
            elif presence is None:  # the member's first scan: read with the session, none was there
                presence = Presence(session_id=str(sid), user_id=claims.user_id)
            if ticket is None:
                self._refused(scan, ctx, now, "TICKET_INVALID", claims.session_id, claims.user_id)
                raise CheckInRefused("TICKET_INVALID", "no ticket was issued for this member", status=401)
            checkin = self._attempt(scan, now, claims.session_id, claims.user_id, str(ticket.id), policy)
            try:
                ticket.use(claims.nonce, checkin.id)
            except CheckInRefused as e:
                if scan.offline and e.code == "TICKET_ALREADY_USED":
                    return self._offline_duplicate(scan, ctx, checkin, ticket.used[claims.nonce])
                checkin.decide(False, e.code)
                self.save_stamped(ctx, checkin)
                raise
            try:
                if by_face:
                    return self._check_face(ctx, session, ticket, checkin, scan.image or b"")
                return self._admit(ctx, session, ticket, checkin, "OK", presence=presence)
            except ConcurrencyConflict:  # reload: the nonce was taken meanwhile, or a presence or session changed
                session = self.get_session(session.id)
        raise ConcurrencyConflict("the scan could not be recorded; scan again")

    def _attempt(self, scan: Scan, now: dt.datetime, sid: str, uid: str, tid: str, policy: str) -> CheckIn:
        return CheckIn(session_id=sid, user_id=uid, ticket_id=tid, device_id=scan.device_id[:100],
                       gate=scan.gate[:100], direction=scan.direction, policy=policy,
                       scanned_at=scan.scanned_at or now, received_at=now, offline=scan.offline)

    def _refused(self, scan: Scan, ctx: CommandContext, now: dt.datetime, code: str, sid: str = "",
                 uid: str = "") -> None:
        checkin = self._attempt(scan, now, sid, uid, "", "")
        checkin.decide(False, code)
        self.save_stamped(ctx, checkin)

    def _presence(self, session_id: uuid.UUID | str, user_id: uuid.UUID | str) -> Presence:
        return (self._find(presence_id(session_id, user_id), Presence)
                or Presence(session_id=str(session_id), user_id=str(user_id)))

    def _admit(self, ctx: CommandContext, session: Session, ticket: Ticket, checkin: CheckIn, reason: str,
               face: Any = None, presence: Presence | None = None) -> ScanResult:
        """`presence`: the member's, when the caller has just loaded it."""
        presence = presence if presence is not None else self._presence(session.id, checkin.user_id)
        presence.scan(checkin.id, checkin.direction, checkin.gate)
        checkin.decide(True, reason, face)
        if checkin.direction == "in":
            session.record_attendance()  # only the first one is an event
        self.save_stamped(ctx, ticket, checkin, presence, session)
        return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "succeeded", reason, face)

    def _fail(self, ctx: CommandContext, ticket: Ticket, checkin: CheckIn, reason: str, face: Any = None) -> ScanResult:
        checkin.decide(False, reason, face)
        ticket.count_failure(checkin.id, reason)
        self.save_stamped(ctx, ticket, checkin)
        return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "failed", reason, face)

    def _check_face(self, ctx: CommandContext, session: Session, ticket: Ticket, checkin: CheckIn,
                    image: bytes) -> ScanResult:
        from adapters.face import VerifierUnavailable

        try:
            template = self.faces.template(checkin.user_id)
        except VerifierUnavailable as e:  # the model's version is unknown: wait as pending, failed by the deadline
            log.warning("face_model_unavailable", checkin_id=str(checkin.id), error=str(e))
            self.save_stamped(ctx, ticket, checkin)
            return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "pending", "VERIFIER_UNAVAILABLE")
        if template is None:
            stale = self._stale_enrolment(checkin.user_id)
            code = "FACE_ENROLMENT_STALE" if stale else "FACE_NOT_ENROLLED"
            self._fail(ctx, ticket, checkin, code)
            if stale is not None:
                self.save_stamped(ctx, stale)
            raise CheckInRefused(code, "the face model changed since this member enrolled: enrol again" if stale
                                 else "this member has not enrolled a face", status=422)
        self.save_stamped(ctx, ticket, checkin)  # the nonce is used and the attempt pending, whatever happens next
        pool = self._pool()
        answer = pool.submit(self.verifier.verify, template, image)
        try:
            verdict = answer.result(timeout=self.verify_timeout)
        except concurrent.futures.TimeoutError:
            answer.add_done_callback(lambda f: self._settle_late(ctx, checkin.id, f))
            return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "pending", "VERIFYING")
        except DomainError as e:  # no one face (NoFace, SeveralFaces), or a photo the model will not read
            self._fail(ctx, ticket, checkin, e.code)
            raise
        except Exception as e:  # noqa: BLE001 - an unavailable verifier: stays pending, settled by the deadline
            log.warning("face_verifier_unavailable", checkin_id=str(checkin.id), error=type(e).__name__)
            return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "pending", "VERIFIER_UNAVAILABLE")
        return self._settle(ctx, checkin.id, verdict)

    def _stale_enrolment(self, user_id: str) -> Any:
        """The member's enrolment, marked stale, if it was made by another model version."""
        from domain.enrolment import FaceEnrolment, enrolment_id

        enrolment = self._find(enrolment_id(user_id), FaceEnrolment)
        analyzer = getattr(self, "analyzer", None)
        if enrolment is None or analyzer is None or not enrolment.template:
            return None
        enrolment.mark_stale(analyzer.model_version)
        return enrolment if enrolment.template is None else None

    def _settle(self, ctx: CommandContext, checkin_id: uuid.UUID, verdict: Any) -> ScanResult:
        """Record the verifier's answer for a pending attempt (once)."""
        for _ in range(5):
            checkin = self._get(checkin_id, CheckIn, "check-in")
            if checkin.outcome != "pending":
                return ScanResult(checkin.id, checkin.session_id, checkin.user_id, checkin.outcome,
                                  checkin.reason or "")
            ticket = self._get(uuid.UUID(checkin.ticket_id), Ticket, "ticket")
            session = self.get_session(uuid.UUID(checkin.session_id))
            try:
                if verdict.match:
                    return self._admit(ctx, session, ticket, checkin, "OK", verdict)
                return self._fail(ctx, ticket, checkin, verdict.reason or "FACE_MISMATCH", verdict)
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict("the verdict could not be recorded")

    def _settle_late(self, ctx: CommandContext, checkin_id: uuid.UUID, answer: concurrent.futures.Future) -> None:
        try:
            self._settle(ctx, checkin_id, answer.result())
        except Exception:  # noqa: BLE001 - the deadline job fails it later; never lost
            log.exception("late_verdict_not_recorded", checkin_id=str(checkin_id))

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._verifications is None:
            self._verifications = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="face")
        return self._verifications

    def fail_overdue(self, pending: list[tuple[uuid.UUID, dt.datetime]], now: dt.datetime) -> int:
        """Fail the pending attempts received before the deadline; returns how many."""
        failed = 0
        for checkin_id, received in pending:
            if now - received < VERIFY_DEADLINE:
                continue
            checkin = self._find(checkin_id, CheckIn)
            if checkin is None or checkin.outcome != "pending":
                continue
            ticket = self._get(uuid.UUID(checkin.ticket_id), Ticket, "ticket")
            try:
                self._fail(CommandContext.system("checkin-deadline"), ticket, checkin, "VERIFICATION_TIMEOUT")
                failed += 1
            except ConcurrencyConflict:
                pass  # settled meanwhile
        return failed

    def _offline_duplicate(self, scan: Scan, ctx: CommandContext, checkin: CheckIn, other_id: str) -> ScanResult:
        """An uploaded offline scan of a nonce already used: the same scan
        uploaded again is answered as before; another device's is a conflict."""
        other = self._get(uuid.UUID(other_id), CheckIn, "check-in")
        if other.device_id == checkin.device_id and other.scanned_at == checkin.scanned_at:
            return ScanResult(other.id, other.session_id, other.user_id, other.outcome, other.reason or "")
        checkin.conflict(other.id)
        self.save_stamped(ctx, checkin)
        return ScanResult(checkin.id, checkin.session_id, checkin.user_id, "conflict", "DUPLICATE_OFFLINE_SCAN")

    # --- hosts ----------------------------------------------------------
    def mark_attendance(self, cmd: MarkAttendance, ctx: CommandContext) -> None:
        session = self.get_session(cmd.session_id)
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        presence = self._presence(session.id, cmd.user_id)
        presence.mark(cmd.present, ctx.actor, cmd.reason)
        if cmd.present:
            session.record_attendance()
        self.save_stamped(ctx, presence, session)

    def annul_checkin(self, cmd: AnnulCheckIn, ctx: CommandContext) -> None:
        checkin = self._get(cmd.checkin_id, CheckIn, "check-in")
        session = self.get_session(uuid.UUID(checkin.session_id))
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        if checkin.outcome != "succeeded":
            raise CheckInRefused("NOT_CHECKED_IN", "only a successful check-in can be annulled")
        presence = self._get(presence_id(session.id, checkin.user_id), Presence, "presence")
        checkin.annul(ctx.actor, cmd.reason)
        presence.mark(False, ctx.actor, f"check-in annulled: {cmd.reason}")
        self.save_stamped(ctx, checkin, presence)

    def resolve_conflict(self, cmd: ResolveConflict, ctx: CommandContext) -> None:
        checkin = self._get(cmd.checkin_id, CheckIn, "check-in")
        session = self.get_session(uuid.UUID(checkin.session_id))
        check_is_host(ctx.user_id, ctx.roles, session.host_ids)
        checkin.resolve(cmd.accept)
        changed: list[Any] = [checkin]
        if cmd.accept:
            presence = self._presence(session.id, checkin.user_id)
            presence.scan(checkin.id, checkin.direction, checkin.gate)
            changed.append(presence)
        self.save_stamped(ctx, *changed)


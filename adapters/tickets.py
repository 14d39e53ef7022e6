"""QR tickets: EdDSA-signed JWTs (with `kid`, from the same keyring as access
tokens) holding the member, the session, a one-time nonce, when it was issued
and the check-in window; rendered as QR codes with segno.

A scanner can check a ticket offline with the public keys of
`/.well-known/jwks.json`. Verification here takes the instant to judge the
window at (now, or the device's scan time for an uploaded offline scan), so
pyjwt's own clock checks are off and the window is checked explicitly.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import jwt
import segno

from adapters.tokens import ALGORITHM, ISSUER, LEEWAY, Keyring
from domain.attendance import CheckInRefused

TICKET_AUDIENCE = "attendwise-checkin"
TICKET_TYPE = "ticket"


@dataclass(frozen=True)
class TicketClaims:
    user_id: str
    session_id: str
    nonce: str
    issued_at: dt.datetime
    opens: dt.datetime
    closes: dt.datetime


def _invalid(message: str) -> CheckInRefused:
    return CheckInRefused("TICKET_INVALID", message, status=401)


class TicketSigner:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def sign(self, claims: TicketClaims) -> str:
        kid = self.keyring.active
        payload = {"iss": ISSUER, "aud": TICKET_AUDIENCE, "typ": TICKET_TYPE, "sub": claims.user_id,
                   "sid": claims.session_id, "nonce": claims.nonce, "iat": claims.issued_at, "nbf": claims.opens,
                   "exp": claims.closes}
        return jwt.encode(payload, self.keyring.keys[kid], algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})

    def verify(self, token: str, at: dt.datetime) -> TicketClaims:
        """The ticket's claims if its signature, issuer, audience and type are
        right and `at` is inside its window: `TICKET_INVALID` (forged,
        re-signed, tampered, unknown key), `NOT_YET_OPEN`, `TICKET_EXPIRED`."""
        key = self.keyring.verifying_key(token, _invalid)
        try:
            p = jwt.decode(token, key, algorithms=[ALGORITHM], audience=TICKET_AUDIENCE, issuer=ISSUER,
                           options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                    "require": ["exp", "nbf", "iat", "iss", "aud", "sub", "sid", "nonce"]})
        except jwt.PyJWTError as e:
            raise _invalid(f"the ticket is not valid: {type(e).__name__}") from e
        if p.get("typ") != TICKET_TYPE:
            raise _invalid("this token is not a ticket")
        stamp = lambda s: dt.datetime.fromtimestamp(s, dt.timezone.utc)  # noqa: E731
        claims = TicketClaims(str(p["sub"]), str(p["sid"]), str(p["nonce"]), stamp(p["iat"]), stamp(p["nbf"]),
                              stamp(p["exp"]))
        if at + LEEWAY < claims.opens:
            raise CheckInRefused("NOT_YET_OPEN", f"check-in opens at {claims.opens.isoformat()}",
                                 opens_at=claims.opens.isoformat())
        if at - LEEWAY > claims.closes:
            raise CheckInRefused("TICKET_EXPIRED", "this ticket's check-in window has closed", status=410)
        return claims


def qr_png(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(payload, error="m").save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(payload, error="m").save(out, kind="svg", scale=scale, border=4, xmldecl=False)
    return out.getvalue()

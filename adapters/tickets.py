"""QR tickets: EdDSA-signed JWTs (with `kid`, from the same keyring as access
tokens) holding the member, the session, a one-time nonce, when it was issued
and the check-in window; rendered as QR codes with segno.

A scanner can check a ticket offline with the public keys of
`/.well-known/jwks.json`. The window is judged at an instant the caller
gives (now, or the device's scan time for an uploaded offline scan), so
pyjwt's own clock checks are off and the window is checked explicitly.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import jwt
import segno

from adapters.tokens import ALGORITHM, ISSUER, LEEWAY, Keyring
from domain.attendance import CheckInRefused, check_window

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

    def check_window(self, at: dt.datetime) -> None:
        """`NOT_YET_OPEN` or `TICKET_EXPIRED` unless `at` is in the ticket's
        own window (give or take the clock leeway of every token)."""
        check_window(at, self.opens - LEEWAY, self.closes + LEEWAY)


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

    def read(self, token: str) -> TicketClaims:
        """The ticket's claims if its signature, issuer, audience and type
        are right, else `TICKET_INVALID` (forged, re-signed, tampered,
        unknown key). Its window is checked apart (`TicketClaims.check_window`),
        at the server's time or at an offline device's scan time."""
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
        return TicketClaims(str(p["sub"]), str(p["sid"]), str(p["nonce"]), stamp(p["iat"]), stamp(p["nbf"]),
                            stamp(p["exp"]))


def qr_png(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(payload, error="m").save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(payload, error="m").save(out, kind="svg", scale=scale, border=4, xmldecl=False)
    return out.getvalue()

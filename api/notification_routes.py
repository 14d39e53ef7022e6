"""Notification preferences (`/me/notification-preferences`), unsubscribe
links that work without logging in, and the password-reset flow whose mail
the notifier sends."""

from __future__ import annotations

import html
import math
from typing import Annotated

from fastapi import APIRouter, Form, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth_routes import TooManyAttempts
from api.deps import Deps, Principal
from api.limits import reset_bucket
from commands.messages import CommandContext
from commands.notifications import PreferenceChanges
from domain.notifications import CHANNELS, KINDS, NotificationPreferences, is_transactional

router = APIRouter(tags=["notifications"])


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(description="HH:MM in your time zone", examples=["22:00"])
    end: str = Field(description="HH:MM in your time zone", examples=["07:00"])


class Preferences(BaseModel):
    channels: dict[str, dict[str, bool]] = Field(description="kind -> channel -> on")
    quiet_hours: QuietHours | None
    reminders: list[int] = Field(description="minutes before a session: 1440 and/or 60")
    locale: str
    push_token: bool = Field(description="whether a push device token is set (the token itself is not shown)")
    phone: str | None


class PreferencesChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: dict[str, dict[str, bool]] | None = None
    quiet_hours: QuietHours | None = Field(None, description="null with `clear_quiet_hours` to remove them")
    clear_quiet_hours: bool = False
    reminders: list[int] | None = Field(None, max_length=2)
    locale: str | None = Field(None, max_length=16)
    push_token: str | None = Field(None, max_length=4096, description="\"\" removes it")
    phone: str | None = Field(None, max_length=20, description="E.164; \"\" removes it")


def _out(p: NotificationPreferences) -> Preferences:
    return Preferences(
        channels={k: {c: p.wants(k, c) for c in CHANNELS} for k in KINDS if not is_transactional(k)},
        quiet_hours=QuietHours(start=p.quiet_hours[0], end=p.quiet_hours[1]) if p.quiet_hours else None,
        reminders=p.reminders, locale=p.locale, push_token="push" in p.addresses, phone=p.addresses.get("sms"))


@router.get("/me/notification-preferences", response_model=Preferences)
def get_preferences(who: Principal, c: Deps) -> Preferences:
    return _out(c.app.notification_preferences(str(who.user_id)))


@router.put("/me/notification-preferences", response_model=Preferences)
def change_preferences(body: PreferencesChange, who: Principal, c: Deps) -> Preferences:
    """Change only what the body names. Transactional messages (email
    verification, password reset, check-in results) ignore channel switches
    and quiet hours where noted in the docs."""
    quiet = ((body.quiet_hours.start, body.quiet_hours.end) if body.quiet_hours
             else (None, None) if body.clear_quiet_hours else None)
    prefs = c.app.change_notification_preferences(who, PreferenceChanges(
        channels=body.channels, quiet_hours=quiet, reminders=body.reminders, locale=body.locale,
        push_token=body.push_token, phone=body.phone))
    return _out(prefs)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:32rem;margin:3rem auto'><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>")


@router.get("/notifications/unsubscribe", response_class=HTMLResponse)
@router.post("/notifications/unsubscribe", response_class=HTMLResponse)
def unsubscribe(token: str, c: Deps) -> HTMLResponse:
    """The link in every non-transactional email (GET), and RFC 8058 one-click
    (POST): no login, the signed token says who and what."""
    kind, channel = c.app.unsubscribe(token)
    label = kind.replace("_", " ")
    return HTMLResponse(_page("Unsubscribed", f"<p>You will no longer get <b>{html.escape(label)}</b> messages by "
                                              f"{html.escape(channel)}. You can turn them on again in your "
                                              "notification settings.</p>"))


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254)


class Accepted(BaseModel):
    status: str = Field("accepted", description="the same answer whether or not the address has an account")


@router.post("/auth/password-reset", status_code=202, response_model=Accepted, tags=["identity"])
def request_password_reset(body: ResetRequest, c: Deps) -> Accepted:
    """Mails a reset link if the address has an account. The answer is the
    same either way, so it does not tell who is registered."""
    if c.limiter is not None:
        wait = c.limiter.take(*reset_bucket(body.email))
        if wait > 0:
            raise TooManyAttempts("too many reset requests for this address; wait and retry",
                                  retry_after=math.ceil(wait))
    c.app.request_password_reset(body.email, CommandContext(actor="anonymous"))
    return Accepted()


@router.get("/auth/reset-password", response_class=HTMLResponse, tags=["identity"])
def reset_password_form(token: str) -> HTMLResponse:
    """The page the reset mail links to: a form posting the new password."""
    return HTMLResponse(_page("Choose a new password", (
        "<form method='post' action='/auth/reset-password'>"
        f"<input type='hidden' name='token' value='{html.escape(token, quote=True)}'>"
        "<label>New password <input type='password' name='new_password' minlength='10' required></label> "
        "<button>Save</button></form>")))


@router.post("/auth/reset-password", status_code=204, tags=["identity"])
def reset_password(token: Annotated[str, Form(max_length=4096)],
                   new_password: Annotated[str, Form(min_length=10, max_length=256)], c: Deps) -> Response:
    """Sets the new password (the link works once, for an hour) and ends
    every earlier login."""
    c.app.reset_password(token, new_password, CommandContext(actor="anonymous"))
    return Response(status_code=204)

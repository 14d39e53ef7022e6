"""Delivery of notifications. Port `Channel`; adapters `SmtpChannel` (email
over SMTP, through aiosmtplib), `WebhookChannel` (push and SMS through an HTTP
provider: Firebase Cloud Messaging HTTP v1 or Twilio's Messages API shape) and
`OutboxChannel` (the embedded default: one JSON file per message).

Every message carries the notification's deterministic id, so a resend after a
crash is recognisable downstream: it is the email's Message-ID, the webhook's
Idempotency-Key and the outbox file's name.

Adapters never let driver errors out: a failed delivery is a `DeliveryFailed`
that says whether trying again may help (`permanent=False`: the provider is
unreachable, timed out or answered "try later") or not (`permanent=True`: the
provider refused this message for good, e.g. an unknown mailbox).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import aiosmtplib
import httpx
import structlog

log = structlog.get_logger("notifier")

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ADDRESS_IN_REPLY = re.compile(r"<[^<>@\s]*@[^<>\s]*>")


@dataclass(frozen=True)
class Message:
    """One rendered notification for one recipient on one channel."""

    id: str  # the notification's deterministic id (uuid str): used as Message-ID / Idempotency-Key
    channel: str  # "email" | "push" | "sms"
    to: str  # email address, push device token, or phone number (E.164)
    subject: str
    text: str
    html: str | None = None
    unsubscribe_url: str | None = None
    data: dict[str, str] = field(default_factory=dict)  # push data (kind, ids)


class DeliveryFailed(Exception):
    """The provider did not accept the message. `permanent` says that sending
    the same message again cannot succeed; otherwise retry later."""

    def __init__(self, reason: str, permanent: bool) -> None:
        self.reason = reason
        self.permanent = permanent
        super().__init__(reason)


class Channel(Protocol):
    """Hands a message to one provider.

    `send` returns the provider's id for the message once the provider has
    accepted it, and raises `DeliveryFailed` otherwise (never a driver error).
    Sending the same `Message` again is allowed and carries the same
    `Message.id`, so the provider or the reader can tell it is a resend.
    `close` releases connections; the channel is not used afterwards."""

    name: str  # e.g. "smtp", "webhook:fcm", "outbox"

    async def send(self, message: Message) -> str: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- SMTP
class SmtpChannel:
    """Email over SMTP. `url` is `smtp://[user:pass@]host[:port][?starttls=1|0]`
    or `smtps://...` for implicit TLS. Without `starttls`, aiosmtplib upgrades
    to TLS when the server offers it; `starttls=1` requires it, `starttls=0`
    never tries."""

    name = "smtp"

    def __init__(self, url: str, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP url must start with smtp:// or smtps://, not {parts.scheme or url!r}")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", [""])[0]
        self.use_tls = parts.scheme == "smtps"
        self.start_tls: bool | None = False if self.use_tls else {"1": True, "0": False}.get(starttls)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.use_tls else 587 if self.start_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout
        # the EHLO name: the sender's domain (else aiosmtplib looks up this host's FQDN on every connection)
        self.local_hostname = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"

    def build(self, message: Message) -> EmailMessage:
        """The email as sent; its Message-ID is derived from the message id."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = " ".join(message.subject.split())
        mail["Date"] = email.utils.formatdate(usegmt=True)
        mail["Message-ID"] = f"<{message.id}@attendwise>"
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        if message.unsubscribe_url:
            mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: Message) -> str:
        try:
            if "@" not in message.to:
                raise ValueError("no @")
            mail = self.build(message)
        except ValueError as e:  # e.g. a line break in the address: no server would ever take it
            raise DeliveryFailed("not an email address", permanent=True) from e
        try:
            await aiosmtplib.send(
                mail, sender=email.utils.parseaddr(self.sender)[1] or self.sender, recipients=[message.to],
                hostname=self.host, port=self.port, username=self.username, password=self.password,
                use_tls=self.use_tls, start_tls=self.start_tls, timeout=self.timeout,
                local_hostname=self.local_hostname)
        except aiosmtplib.SMTPAuthenticationError as e:  # the configuration, not this message
            raise DeliveryFailed(f"SMTP login refused ({e.code}) at {self.host}:{self.port}", permanent=False) from e
        except aiosmtplib.SMTPRecipientsRefused as e:
            codes = [r.code for r in e.recipients]
            first = e.recipients[0] if e.recipients else None
            reason = _smtp_reason(first.code, first.message) if first else "SMTP recipient refused"
            raise DeliveryFailed(reason, permanent=bool(codes) and all(c >= 500 for c in codes)) from e
        except aiosmtplib.SMTPResponseException as e:
            raise DeliveryFailed(_smtp_reason(e.code, e.message), permanent=e.code >= 500) from e
        except (OSError, aiosmtplib.SMTPException) as e:  # refused, timed out, disconnected, TLS
            raise DeliveryFailed(f"SMTP server unreachable at {self.host}:{self.port} ({type(e).__name__})",
                                 permanent=False) from e
        return str(mail["Message-ID"])

    async def close(self) -> None:
        return None  # one connection per message: nothing stays open


def _smtp_reason(code: int, text: str) -> str:
    """'SMTP 550 mailbox unavailable', without the addresses servers echo."""
    first_line = (text or "").splitlines()[0] if text else ""
    return f"SMTP {code} {_ADDRESS_IN_REPLY.sub('<address>', first_line)}".strip()[:200]


# ---------------------------------------------------------------- HTTP providers
SHAPES = ("fcm", "twilio")
_TRANSIENT_STATUS = {408, 429}


class WebhookChannel:
    """Push or SMS through an HTTP provider, one POST per message.

    `shape="fcm"` posts JSON like Firebase Cloud Messaging HTTP v1
    (`{"message": {"token", "notification": {"title", "body"}, "data"}}`);
    `shape="twilio"` posts a form like Twilio's Messages API (`To`, `From`,
    `Body`). Each request carries `Idempotency-Key: <message id>` and, with a
    secret, `X-AttendWise-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
    2xx is success; 408, 429, 5xx and network errors are transient; any other
    status is permanent."""

    def __init__(self, url: str, shape: str, secret: str | None = None, sender: str = "AttendWise",
                 timeout: float = 10.0) -> None:
        if shape not in SHAPES:
            raise ValueError(f"unknown webhook shape {shape!r}; known: {', '.join(SHAPES)}")
        self.url = url
        self.shape = shape
        self.name = f"webhook:{shape}"
        self.secret = secret
        self.sender = sender
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None  # made on first send, in the caller's event loop
        self._loop: asyncio.AbstractEventLoop | None = None

    def body(self, message: Message) -> tuple[bytes, str]:
        """The raw request body and its content type."""
        if self.shape == "fcm":
            payload = {"message": {"token": message.to,
                                   "notification": {"title": message.subject, "body": message.text},
                                   "data": dict(message.data)}}
            return json.dumps(payload, separators=(",", ":")).encode(), "application/json"
        form = {"To": message.to, "From": self.sender, "Body": message.text}
        return urlencode(form).encode(), "application/x-www-form-urlencoded"

    def headers(self, message: Message, body: bytes, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Idempotency-Key": message.id}
        if self.secret:
            headers["X-AttendWise-Signature"] = "sha256=" + sign(self.secret, body)
        return headers

    async def send(self, message: Message) -> str:
        body, content_type = self.body(message)
        if self._client is None or self._loop is not asyncio.get_running_loop():
            # pooled connections belong to one event loop; a new loop (asyncio.run again) needs a new client
            self._client = httpx.AsyncClient(timeout=self.timeout)
            self._loop = asyncio.get_running_loop()
        try:
            response = await self._client.post(self.url, content=body,
                                               headers=self.headers(message, body, content_type))
        except httpx.HTTPError as e:  # refused, timed out, reset, TLS
            raise DeliveryFailed(f"{self.name} unreachable at {httpx.URL(self.url).host} ({type(e).__name__})",
                                 permanent=False) from e
        status = response.status_code
        if not 200 <= status < 300:
            transient = status in _TRANSIENT_STATUS or status >= 500
            raise DeliveryFailed(f"HTTP {status} from {self.name}", permanent=not transient)
        return _provider_id(response, "name" if self.shape == "fcm" else "sid") or message.id

    async def close(self) -> None:
        if self._client is not None:
            if self._loop is asyncio.get_running_loop():
                await self._client.aclose()
            self._client = self._loop = None


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of a webhook body, as in `X-AttendWise-Signature: sha256=<this>`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _provider_id(response: httpx.Response, key: str) -> str | None:
    try:
        value: Any = response.json().get(key)
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


# ---------------------------------------------------------------- outbox
class OutboxChannel:
    """The embedded default: `<folder>/<id>.json` per message, written whole
    (temporary name, then rename), so a resend replaces the file rather than
    adding one. The log says that a message was written, never its text."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def send(self, message: Message) -> str:
        if not _SAFE_ID.fullmatch(message.id):
            raise ValueError(f"message id {message.id!r} cannot be a file name")
        record = {"id": message.id, "channel": message.channel, "to": message.to, "subject": message.subject,
                  "text": message.text, "html": message.html, "unsubscribe_url": message.unsubscribe_url,
                  "data": dict(message.data), "written_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        path = self.folder / f"{message.id}.json"
        tmp = self.folder / f".{message.id}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(record, ensure_ascii=False))
            os.replace(tmp, path)
        except OSError as e:  # full disk, folder gone or read-only: may pass
            raise DeliveryFailed(f"outbox folder {self.folder} not writable ({type(e).__name__})",
                                 permanent=False) from e
        log.info("notification_written", id=message.id, channel=message.channel, path=str(path))
        return message.id

    def messages(self) -> list[dict[str, Any]]:
        """Every message written, oldest first."""
        found = [json.loads(p.read_text()) for p in self.folder.glob("*.json")]
        return sorted(found, key=lambda m: m["written_at"])

    async def close(self) -> None:
        return None

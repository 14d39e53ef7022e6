"""Outgoing mail. Port `Mailer`; the embedded default writes each message to
an outbox folder and the log (the notification service of a later issue
sends real mail over SMTP)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger("mailer")


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str) -> None: ...


class OutboxMailer:
    """One JSON file per message in `folder`; the log says that (not what) it sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def send(self, to: str, subject: str, text: str) -> None:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
        (self.folder / name).write_text(json.dumps({"to": to, "subject": subject, "text": text}))
        log.info("mail_written", outbox=str(self.folder / name), subject=subject)

    def messages(self) -> list[dict[str, str]]:
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

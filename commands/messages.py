"""Commands are requests to change something; they may be refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CommandContext:
    """Who asked, and which request this is. Stamped on every event the command
    causes (`actor`, `command_id`) so the log answers "who did this, and why"."""

    actor: str = "anonymous"
    command_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class RegisterUser:
    email: str
    display_name: str
    time_zone: str = "UTC"


@dataclass(frozen=True)
class ChangeDisplayName:
    user_id: uuid.UUID
    display_name: str

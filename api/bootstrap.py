"""The composition root: the one place that turns settings into adapters and
hands them to the application, projections and API. Nothing is created at
import time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.bus import EventBus, InProcessBus, JetStreamBus
from adapters.personal_data import PostgresKeyVault, SQLiteKeyVault
from adapters.mailer import OutboxMailer
from adapters.credentials import PostgresCredentialStore, SQLiteCredentialStore
from adapters.ratelimit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from adapters.idempotency import IdempotencyStore, PostgresIdempotencyStore, SQLiteIdempotencyStore
from adapters.eventstore import ApplicationEventLog, open_event_store
from adapters.readmodels import PostgresReadModelStore, ReadModelStore, SQLiteReadModelStore
from adapters.tokens import Keyring, TokenService
from api.settings import Settings
from commands.application import AttendWise
from projections.catalogue import all_projections
from projections.projector import Projector


@dataclass
class Container:
    settings: Settings
    app: AttendWise
    event_log: ApplicationEventLog
    readmodels: ReadModelStore
    projectors: dict[str, Projector] = field(default_factory=dict)
    idempotency: IdempotencyStore | None = None
    limiter: RateLimiter | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))

    def close(self) -> None:
        self.readmodels.close()
        self.app.close()


def build(settings: Settings) -> Container:
    vault = (PostgresKeyVault(settings.database_url) if settings.database_url
             else SQLiteKeyVault(settings.data_dir / "keys.sqlite3"))
    app = open_event_store(settings.database_url, settings.events_path, group_commit=settings.group_commit,
                           vault=vault)
    app.credentials = (PostgresCredentialStore(settings.database_url) if settings.database_url
                       else SQLiteCredentialStore(settings.credentials_path))
    app.tokens = TokenService(Keyring(settings.signing_keys))
    app.mailer = OutboxMailer(settings.data_dir / "outbox")
    store: ReadModelStore = (
        PostgresReadModelStore(settings.database_url) if settings.database_url
        else SQLiteReadModelStore(settings.readmodels_path)
    )
    c = Container(settings, app, ApplicationEventLog(app), store)
    if settings.rate_limits:
        c.limiter = RedisRateLimiter(settings.redis_url) if settings.redis_url else InMemoryRateLimiter()
    c.idempotency = (PostgresIdempotencyStore(settings.database_url) if settings.database_url
                     else SQLiteIdempotencyStore(settings.data_dir / "idempotency.sqlite3"))
    c.projectors = {name: Projector(p, store) for name, p in all_projections().items()}
    return c


async def connect_bus(settings: Settings) -> EventBus:
    if settings.nats_url:
        return await JetStreamBus.connect(settings.nats_url, namespace=settings.nats_namespace)
    return InProcessBus()

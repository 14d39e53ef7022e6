"""The composition root: the one place that turns settings into adapters and
hands them to the application, projections and API. Nothing is created at
import time."""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.audit_chain import AuditSeals, Sealer, postgres_seals, sqlite_seals
from adapters.graph import FeedGraph
from adapters.graph_neo4j import Neo4jFeedGraph
from adapters.graph_sql import SQLiteFeedGraph
from adapters.media import FileMediaStore, MediaStore, S3MediaStore
from adapters.bus import EventBus, InProcessBus, JetStreamBus
from adapters.personal_data import PostgresKeyVault, SQLiteKeyVault
from adapters.credentials import PostgresCredentialStore, SQLiteCredentialStore
from adapters.ratelimit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from adapters.idempotency import IdempotencyStore, PostgresIdempotencyStore, SQLiteIdempotencyStore
from adapters.eventstore import ApplicationEventLog, open_event_store
from adapters.readmodels import PostgresReadModelStore, ReadModelStore, SQLiteReadModelStore
from adapters.face import AnalyzerVerifier, FaceAnalyzer, NoModelVerifier
from adapters.tickets import TicketSigner
from adapters.tokens import Keyring, TokenService
from api.settings import Settings
from commands.application import AttendWise
from commands.enrolment import EnrolledTemplates
from projections.catalogue import all_projections
from projections.feed_graph import FeedGraphProjection
from projections.projector import Projector
from projections.rebuild import Target


@dataclass
class Container:
    settings: Settings
    app: AttendWise
    event_log: ApplicationEventLog
    readmodels: ReadModelStore
    graph: FeedGraph | None = None
    media: MediaStore | None = None
    projectors: dict[str, Projector] = field(default_factory=dict)
    idempotency: IdempotencyStore | None = None
    limiter: RateLimiter | None = None
    seals: AuditSeals | None = None
    keyring: Keyring | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))

    def close(self) -> None:
        self.readmodels.close()
        if self.graph is not None:
            self.graph.close()
        self.app.close()


def _event_store(settings: Settings) -> AttendWise:
    vault = (PostgresKeyVault(settings.database_url) if settings.database_url
             else SQLiteKeyVault(settings.data_dir / "keys.sqlite3"))
    return open_event_store(settings.database_url, settings.events_path, group_commit=settings.group_commit,
                            vault=vault)


def _read_models(settings: Settings) -> ReadModelStore:
    return (PostgresReadModelStore(settings.database_url) if settings.database_url
            else SQLiteReadModelStore(settings.readmodels_path))


def _feed_graph(settings: Settings) -> FeedGraph:
    return (Neo4jFeedGraph(settings.neo4j_uri, namespace=settings.neo4j_namespace) if settings.neo4j_uri
            else SQLiteFeedGraph(settings.readmodels_path))  # embedded: g_ tables beside the read models


def rebuild_targets(settings: Settings) -> tuple[ApplicationEventLog, dict[str, Target]]:
    """What a rebuild worker process opens (`rebuild_in_processes`): the log,
    and every projection with its store, by name, as `build` wires them."""
    store, feed = _read_models(settings), FeedGraphProjection()
    targets: dict[str, Target] = {name: (p, store) for name, p in all_projections().items()}
    targets[feed.name] = (feed, _feed_graph(settings))  # type: ignore[assignment]  # a store of its own kind
    return ApplicationEventLog(_event_store(settings)), targets


def build(settings: Settings) -> Container:
    app = _event_store(settings)
    app.credentials = (PostgresCredentialStore(settings.database_url) if settings.database_url
                       else SQLiteCredentialStore(settings.credentials_path))
    keyring = Keyring(settings.signing_keys)
    app.tokens, app.tickets = TokenService(keyring), TicketSigner(keyring)
    app.analyzer = face_analyzer(settings)
    app.verifier = AnalyzerVerifier(app.analyzer) if app.analyzer is not None else NoModelVerifier()
    app.faces = EnrolledTemplates(app)
    store = _read_models(settings)
    app.media = media_store(settings)
    graph = _feed_graph(settings)
    c = Container(settings, app, ApplicationEventLog(app), store, graph=graph, media=app.media, keyring=keyring)
    if settings.rate_limits:
        c.limiter = RedisRateLimiter(settings.redis_url) if settings.redis_url else InMemoryRateLimiter()
    c.idempotency = (PostgresIdempotencyStore(settings.database_url) if settings.database_url
                     else SQLiteIdempotencyStore(settings.data_dir / "idempotency.sqlite3"))
    c.projectors = {name: Projector(p, store) for name, p in all_projections().items()}
    for projector in c.projectors.values():  # read models share the event store's database: make them now
        projector.install()
    feed = FeedGraphProjection()
    c.projectors[feed.name] = Projector(feed, graph, errors=store)  # type: ignore[arg-type]  # its failures beside the others
    return c


def audit_seals(c: Container) -> AuditSeals:
    """The seals beside the log, opened on first use (most processes never do)."""
    if c.seals is None:
        s = c.settings
        c.seals = postgres_seals(s.database_url) if s.database_url else sqlite_seals(s.audit_path)
    return c.seals


def sealer(c: Container) -> Sealer:
    assert c.keyring is not None
    return Sealer(c.event_log.raw, audit_seals(c), c.keyring)


def face_analyzer(settings: Settings) -> FaceAnalyzer | None:
    """Full mode: face workers over NATS. Embedded: the model in this process
    (loaded on first use), if provisioned; otherwise none: face check-ins are
    refused (`NO_MODEL`), enrolment answers FACE_MODEL_UNAVAILABLE."""
    if settings.nats_url:
        from adapters.face_nats import NatsFaceAnalyzer

        return NatsFaceAnalyzer(settings.nats_url, settings.nats_namespace, timeout=settings.face_timeout)
    return local_face_analyzer(settings)


def local_face_analyzer(settings: Settings) -> FaceAnalyzer | None:
    from ml.provision import provisioned

    return _local_model(settings.model_dir.resolve()) if provisioned(settings.model_dir) else None


@functools.lru_cache(maxsize=None)
def _local_model(model_dir: Path) -> FaceAnalyzer:
    """One model per process (TensorFlow and about 1.2 GB), warmed on first use."""
    from ml.verifier import DeepFaceVerifier

    return DeepFaceVerifier.at(model_dir)  # type: ignore[return-value]


def media_store(settings: Settings) -> MediaStore:
    if settings.s3_endpoint:
        return S3MediaStore(settings.s3_endpoint, settings.s3_access_key or "", settings.s3_secret_key or "",
                            settings.s3_bucket)
    secret_file = settings.data_dir / "media.secret"
    if not secret_file.exists():  # signs the local upload and download URLs; made once
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_bytes(os.urandom(32))
        secret_file.chmod(0o600)
    return FileMediaStore(settings.data_dir / "media", settings.base_url, secret_file.read_bytes())


async def connect_bus(settings: Settings) -> EventBus:
    if settings.nats_url:
        return await JetStreamBus.connect(settings.nats_url, namespace=settings.nats_namespace)
    return InProcessBus()

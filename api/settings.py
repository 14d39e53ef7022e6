"""One settings object, read from ATTENDWISE_* environment variables and
validated at start-up. With nothing set, everything runs embedded: SQLite
files under `data_dir`, the in-process bus, no external services."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTENDWISE_", extra="ignore")

    data_dir: Path = Field(Path(".attendwise/data"), description="Embedded mode's files (SQLite, outbox)")
    database_url: str | None = Field(None, description="PostgreSQL URL for the event store and read models; unset: SQLite")
    nats_url: str | None = Field(None, description="NATS URL (JetStream); unset: the in-process bus")
    nats_namespace: str = Field("", pattern=r"^[a-z0-9_]*$", description="Keeps deployments apart on one NATS server: stream ATTENDWISE_<NS>, subjects <ns>.attendwise.>")
    neo4j_uri: str | None = Field(None, description="Neo4j Bolt URI for the feed graph; unset: embedded graph")
    neo4j_namespace: str = Field("attendwise", pattern=r"^[a-z0-9_]+$", description="Keeps deployments apart on one Neo4j database")
    s3_endpoint: str | None = Field(None, description="S3 API endpoint for media (MinIO); unset: files under data_dir/media")
    s3_access_key: str | None = Field(None, description="S3 access key (required with ATTENDWISE_S3_ENDPOINT)")
    s3_secret_key: str | None = Field(None, repr=False, description="S3 secret key (required with ATTENDWISE_S3_ENDPOINT)")
    s3_bucket: str = Field("attendwise-media", description="Bucket for avatars and post images")
    public_url: str | None = Field(None, description="The API's address as clients reach it (local media URLs); "
                                   "default http://<host>:<port>")
    redis_url: str | None = Field(None, description="Redis URL for shared rate limits; unset: in memory")
    keys_dir: Path | None = Field(None, description="Token signing keys (Ed25519 PEM files + `active`); default "
                                  "<data_dir>/keys. API processes that share users must share this folder")
    model_dir: Path = Field(Path(".attendwise/models"), description="Face model weights (`attendwise ml provision` "
                            "writes them; DEEPFACE_HOME points here)")
    face_timeout: float = Field(10.0, gt=0, le=120, description="Seconds to wait for a face worker's answer "
                                "(then a check-in waits as pending, an enrolment frame is refused)")
    smtp_url: str | None = Field(None, description="SMTP server for email (smtp://[user:pass@]host:port, smtps:// "
                                 "or ?starttls=1); unset: messages go to <data_dir>/outbox")
    mail_from: str = Field("AttendWise <no-reply@attendwise.localhost>", description="Sender of every email")
    push_webhook_url: str | None = Field(None, description="Push provider endpoint (FCM HTTP v1 payload); unset: outbox")
    sms_webhook_url: str | None = Field(None, description="SMS provider endpoint (Twilio-style form); unset: outbox")
    webhook_secret: str | None = Field(None, repr=False, description="Signs push and SMS requests "
                                       "(X-AttendWise-Signature: sha256=HMAC of the body)")
    notify_max_attempts: int = Field(5, ge=1, le=50, description="Delivery attempts before a message is a dead letter")
    notify_retry_base: float = Field(2.0, gt=0, le=3600, description="Seconds before the first retry (doubles each "
                                     "time, with jitter, at most 10 minutes)")
    notify_lease: float = Field(60.0, ge=1, le=3600, description="Seconds a worker owns a delivery attempt; after "
                                "a crash another worker resends after this")
    notify_ack_wait: float = Field(30.0, ge=1, le=3600, description="Seconds JetStream waits for a notifier to "
                                   "finish an event before handing it to another (full mode)")
    notify_sweep_every: float = Field(2.0, gt=0, le=600, description="Seconds between looks for due retries")
    notify_reminders_every: float = Field(30.0, gt=0, le=3600, description="Seconds between reminder sweeps")
    host: str = Field("127.0.0.1", description="Where `attendwise serve` listens")
    port: int = Field(8000, ge=1, le=65535)
    graphql_introspection: bool = Field(True, description="Let clients introspect the GraphQL schema "
                                        "(turn off in production if you do not publish it)")
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins allowed to call the API "
                                    "(JSON list, e.g. [\"https://app.example.org\"]); empty: none")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (images have their own)")
    rate_limits: bool = Field(True, description="Token-bucket limits per client IP, credential and login name "
                              "(in memory, or in Redis when ATTENDWISE_REDIS_URL is set)")
    group_commit: bool = Field(True, description="Coalesce concurrent commands into one PostgreSQL transaction")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _s3_credentials(self) -> "Settings":
        if self.s3_endpoint and not (self.s3_access_key and self.s3_secret_key):
            raise ValueError("ATTENDWISE_S3_ENDPOINT needs ATTENDWISE_S3_ACCESS_KEY and ATTENDWISE_S3_SECRET_KEY")
        return self

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def events_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    @property
    def signing_keys(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials.sqlite3"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.sqlite3"

    @property
    def readmodels_path(self) -> Path:
        return self.data_dir / "readmodels.sqlite3"

"""The command API (FastAPI): validates, hands commands to the application,
and speaks RFC 9457 problem+json for every error."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import URL, Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.errors import ServiceUnavailable
from adapters.idempotency import IN_PROGRESS_TTL, fingerprint
from adapters.media import FileMediaStore
from adapters.relay import Relay
from api.bootstrap import Container, connect_bus
from api.auth_routes import router as auth_router
from api.notification_routes import router as notification_router
from api.notifier import run_notifier
from api.deps import Deps
from api.settings import Settings
from api.limits import buckets
from api.graphql import graphql_app
from api.live import LiveFeed
from api.live import router as live_router
from api.jobs import SEAL_EVERY, extend_horizons, fail_overdue_checkins, in_thread, repeat, seal_log
from api.attendance_routes import MAX_PHOTO_BYTES
from api.attendance_routes import router as attendance_router
from api.community_routes import router as community_router
from api.console import mount_console
from api.enrolment_routes import MAX_FRAME_BYTES
from api.enrolment_routes import router as enrolment_router
from api.media_routes import router as media_router
from api.scheduling_routes import router as scheduling_router
from commands.messages import CommandContext, RegisterUser
from domain.errors import DomainError
from domain.media import PURPOSES

log = structlog.get_logger("api")
PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://attendwise.dev/problems/"


# ---------------------------------------------------------------- schemas
class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254, examples=["ada@example.org"])
    display_name: str = Field(max_length=200, examples=["Ada Lovelace"])
    password: str = Field(min_length=10, max_length=256, examples=["correct horse battery"])
    time_zone: str = Field("UTC", max_length=64, examples=["Europe/London"])


class UserCreated(BaseModel):
    id: uuid.UUID
    command_id: uuid.UUID


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    code: str


def problem(status: int, code: str, title: str, detail: str | None = None, retry_after: int | None = None,
            **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + code.lower().replace("_", "-"), "title": title, "status": status,
            "detail": detail, "code": code, **extra}
    if retry_after is None and status == 503:
        retry_after = ServiceUnavailable.RETRY_AFTER
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def unavailable_problem(e: ServiceUnavailable) -> JSONResponse:
    """503 with Retry-After, naming the service that is down and its setting (logged)."""
    log.warning("service_unavailable", service=e.service, setting=e.setting)
    return problem(503, "SERVICE_UNAVAILABLE", f"{e.service} is unavailable", str(e))


# Requests that carry an image have their own body limit (the image's, plus the form around it).
FORM_MARGIN = 64 * 1024
IMAGE_BODIES = {"/media/upload": max(PURPOSES.values()) + FORM_MARGIN,  # checked again by its signed form
                "/checkin": MAX_PHOTO_BYTES + FORM_MARGIN, "/users/me/enroll-face": MAX_FRAME_BYTES + FORM_MARGIN}


# ---------------------------------------------------------------- middleware
# Pure ASGI (no BaseHTTPMiddleware: it costs extra tasks and memory streams per
# request). Only http scopes are handled; websocket and lifespan pass through.
def _path(scope: Scope) -> str:
    return URL(scope=scope).path  # what Request.url.path gives


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (as Request.body() reads it)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands an already read body to the app downstream, then the real receive (disconnects)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class BodySizeLimit:
    """413 for a body larger than its path's limit (IMAGE_BODIES, else
    max_body_bytes), whether declared by Content-Length or streamed without."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        limit = IMAGE_BODIES.get(_path(scope), self.settings.max_body_bytes)
        too_large = f"the request body is larger than {limit} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await problem(413, "BODY_TOO_LARGE", too_large)(scope, receive, send)
        if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
            chunks: list[bytes] = []
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk, more = message.get("body", b""), message.get("more_body", False)
                size += len(chunk)
                if size > limit:
                    return await problem(413, "BODY_TOO_LARGE", too_large)(scope, receive, send)
                chunks.append(chunk)
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, send)


class IdempotentCommands:
    """A command retried with the same Idempotency-Key gets the first
    response back and runs no second time (keys are per caller)."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app, self.container = app, container
        self._later: set[asyncio.Task[None]] = set()

    async def _settle(self, write: Callable[[], None]) -> None:
        """Record a key's outcome (`complete` or `release`). When the store is
        unavailable (PostgreSQL went down during the command), the answer still
        goes out and the write is retried in the background for half the
        reservation's lifetime: a retry then gets the kept answer, or runs,
        instead of being told IDEMPOTENCY_KEY_IN_USE until the reservation lapses."""
        try:
            await asyncio.to_thread(write)
        except ServiceUnavailable as e:
            log.warning("idempotency_key_not_settled", error=str(e), retry_for=IN_PROGRESS_TTL / 2)
            task = asyncio.create_task(self._settle_later(write, time.monotonic() + IN_PROGRESS_TTL / 2))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _settle_later(self, write: Callable[[], None], deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            try:
                return await asyncio.to_thread(write)
            except ServiceUnavailable:
                continue
        log.warning("idempotency_key_left_to_lapse")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.container.idempotency
        if scope["type"] != "http" or store is None or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        if key is None:
            return await self.app(scope, receive, send)
        if not 1 <= len(key) <= 200 or not key.isprintable():
            return await problem(400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1 to 200 printable "
                                 "characters")(scope, receive, send)
        body = await _read_body(receive)
        path = _path(scope)
        caller = hashlib.sha256(headers.get("authorization", "anonymous").encode()).hexdigest()[:32]
        scoped = f"{caller}:{path}:{key}"
        fp = fingerprint(scope["method"], path, caller, body)
        try:
            stored = await asyncio.to_thread(store.reserve, scoped, fp)
        except ServiceUnavailable as e:  # no key can be kept now, so nothing runs: a clear 503, never a 500
            return await unavailable_problem(e)(scope, receive, send)
        if stored is not None:
            if stored.fingerprint != fp:
                response: Response = problem(422, "IDEMPOTENCY_KEY_REUSED",
                                             "this Idempotency-Key was used for a different request")
            elif stored.status is None:
                response = problem(409, "IDEMPOTENCY_KEY_IN_USE", "the first request with this key is still running",
                                   retry_after=1)
            else:
                response = Response(stored.body, status_code=stored.status, media_type=stored.content_type,
                                    headers={"Idempotent-Replayed": "true"})
            return await response(scope, receive, send)

        start: Message | None = None  # the response's start, held until its body is complete
        chunks: list[bytes] = []
        settled = False  # released (5xx: nothing was decided, a retry may run) or completed

        async def keep(message: Message) -> None:
            nonlocal start, settled
            if message["type"] == "http.response.start":
                start = message
                if message["status"] >= 500:
                    settled = True
                    await self._settle(lambda: store.release(scoped))
                    await send(message)
                return
            if settled or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            content = b"".join(chunks)
            first = Headers(raw=start["headers"])
            settled = True
            status, content_type = start["status"], first.get("content-type", "application/json")
            await self._settle(lambda: store.complete(scoped, status, content, content_type))
            kept = {k: v for k, v in first.items() if k.lower() != "content-length"}
            await Response(content, status_code=start["status"], headers=kept)(scope, receive, send)

        try:
            await self.app(scope, _replay(body, receive), keep)
        except BaseException:
            if not settled:
                await self._settle(lambda: store.release(scoped))
            raise


class RateLimits:
    """429 with Retry-After when a request's token buckets are empty."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app, self.container = app, container

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.container.limiter if scope["type"] == "http" else None
        if limiter is None:
            return await self.app(scope, receive, send)
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        path = _path(scope)
        for key, limit in buckets(scope["method"], path, ip, Headers(scope=scope).get("authorization")):
            wait = await asyncio.to_thread(limiter.take, key, limit)
            if wait > 0:
                log.info("rate_limited", bucket=key.split(":")[0], path=path)
                return await problem(429, "RATE_LIMITED", "too many requests", "slow down and retry later",
                                     retry_after=max(1, math.ceil(wait)))(scope, receive, send)
        await self.app(scope, receive, send)


class RequestIds:
    """X-Request-ID on every response (the caller's if it is sane), bound to the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = Headers(scope=scope).get("x-request-id", "")
        if not (0 < len(rid) <= 64 and rid.replace("-", "").isalnum()):
            rid = uuid.uuid4().hex

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


# ---------------------------------------------------------------- app
def create_app(container: Container, *, run_workers: bool | None = None) -> FastAPI:
    """`run_workers`: run the relay and projectors inside this process (the
    embedded default does; in full mode they are separate processes)."""
    settings = container.settings
    in_process = settings.embedded if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop_threads = threading.Event()
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        threads: list[threading.Thread] = []
        bus = None
        if container.media is not None:
            try:
                await asyncio.to_thread(container.media.install)  # the bucket (or folder) for uploads
            except ServiceUnavailable as e:  # reported by /readyz; uploads fail with 503 until it is back
                log.warning("media_store_unavailable", error=str(e))
        if in_process:
            for p in container.projectors.values():
                t = threading.Thread(target=p.follow, args=(container.event_log, stop_threads.is_set),
                                     name=f"projector-{p.projection.name}", daemon=True)
                t.start()
                threads.append(t)
            bus = await connect_bus(settings)
            app.state.bus = bus
            tasks.append(asyncio.create_task(Relay(container.event_log, bus).run(stop)))
            for name, job, every, wait_first in (
                    ("horizons", lambda: extend_horizons(container), 3600, True),
                    ("overdue check-ins", lambda: fail_overdue_checkins(container), 30, True),
                    ("seal", lambda: seal_log(container), SEAL_EVERY, False)):  # full mode: the relay seals
                tasks.append(asyncio.create_task(repeat(name, stop, in_thread(job), every, wait_first)))
            tasks.append(asyncio.create_task(run_notifier(container, stop)))
        if bus is not None or settings.nats_url:  # live dashboards follow the bus (full mode: its own JetStream link)
            feed_bus = bus if bus is not None else (lambda: connect_bus(settings))
            tasks.append(asyncio.create_task(app.state.live.run(feed_bus, stop)))
        log.info("api_started", embedded=settings.embedded, workers_in_process=in_process)
        yield
        stop.set()
        stop_threads.set()
        for task in tasks:
            await task
        for t in threads:
            t.join(timeout=5)
        if bus is not None:
            await bus.close()

    app = FastAPI(title="AttendWise command API", version="0.1.0", lifespan=lifespan,
                  responses={422: {"model": Problem, "content": {PROBLEM: {}}}})

    app.state.container = container
    app.state.live = LiveFeed(container.readmodels, container.clock)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After", "Idempotent-Replayed"])

    # Pure ASGI layers (outermost last): request ids, rate limits, body size, idempotency (which reads the
    # whole body: the size limit must come first).
    app.add_middleware(IdempotentCommands, container=container)
    app.add_middleware(BodySizeLimit, settings=settings)
    app.add_middleware(RateLimits, container=container)
    app.add_middleware(RequestIds)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, e: DomainError) -> JSONResponse:
        details = {k: v for k, v in e.details.items() if k != "retry_after"}
        response = problem(e.status, e.code, e.message, retry_after=e.details.get("retry_after"),  # type: ignore[arg-type]
                           **({"errors": [details]} if details else {}))
        if e.status == 401:
            response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{e.code}"'
        return response

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, e: ServiceUnavailable) -> JSONResponse:
        return unavailable_problem(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in err["loc"][1:]), "message": err["msg"]} for err in e.errors()]
        return problem(422, "INVALID_INPUT", "the request is not valid", "see errors", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return problem(e.status_code, f"HTTP_{e.status_code}", str(e.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected_error")
        return problem(500, "INTERNAL", "internal error")

    @app.post("/users", status_code=201, response_model=UserCreated, tags=["identity"],
              responses={409: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}})
    def register_user(body: UserCreate, c: Deps, request: Request) -> UserCreated:
        ctx = CommandContext(actor="anonymous")
        user_id = c.app.register_user(RegisterUser(body.email, body.display_name, body.time_zone, body.password), ctx)
        log.info("user_registered", user_id=str(user_id), command_id=str(ctx.command_id))
        return UserCreated(id=user_id, command_id=ctx.command_id)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": Problem}})
    async def readyz(c: Deps, request: Request) -> JSONResponse:
        checks: dict[str, str] = {}

        def check(name: str, fn: Any) -> None:
            try:
                fn()
                checks[name] = "ok"
            except Exception as e:  # noqa: BLE001 - reported
                checks[name] = f"unavailable: {e}"

        await asyncio.to_thread(check, "event_store", c.event_log.head)
        await asyncio.to_thread(check, "read_models", c.readmodels.ping)
        if settings.nats_url:
            bus = getattr(request.app.state, "bus", None)
            if bus is None:
                checks["nats"] = await _check_nats(settings.nats_url)
            else:
                checks["nats"] = "ok" if bus.nc.is_connected else "unavailable: disconnected"
        if settings.neo4j_uri:
            await asyncio.to_thread(check, "neo4j", lambda: _check_neo4j(settings.neo4j_uri))
        if settings.s3_endpoint:
            await asyncio.to_thread(check, "s3", lambda: _check_http(settings.s3_endpoint))
        ok = all(v == "ok" for v in checks.values())
        if ok:
            return JSONResponse({"status": "ready", "checks": checks})
        return problem(503, "NOT_READY", "a dependency is unavailable", checks=checks)

    app.include_router(scheduling_router)
    app.include_router(auth_router)
    app.include_router(community_router)
    app.include_router(attendance_router)
    app.include_router(enrolment_router)
    app.include_router(notification_router)

    @app.get("/audit/checkpoints", tags=["operations"])
    def audit_checkpoints(c: Deps) -> list[dict[str, object]]:
        """The log's signed checkpoints (position, chain hash, key id, Ed25519
        signature over `attendwise-log-checkpoint:v1:<position>:<chain>`).
        Keep copies: with the keys from /.well-known/jwks.json they prove the
        log up to each position was not rewritten later."""
        from api.bootstrap import audit_seals

        return [cp.as_dict() for cp in audit_seals(c).checkpoints()]
    app.include_router(live_router)
    if isinstance(container.media, FileMediaStore):  # the embedded default: uploads come to this API
        app.state.media = container.media
        app.include_router(media_router)
    gql = graphql_app(container, introspection=settings.graphql_introspection)
    app.add_route("/graphql", gql, methods=["GET", "POST"])
    app.router.add_websocket_route("/graphql", gql)
    mount_console(app)  # the web console at / (after every API route)
    return app


async def _check_nats(url: str) -> str:
    from adapters.bus import JetStreamBus

    try:
        bus = await JetStreamBus.connect(url, create_stream=False, timeout=2)
        await bus.close()
        return "ok"
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {e}"


def _check_neo4j(uri: str) -> None:
    import neo4j

    try:
        with neo4j.GraphDatabase.driver(uri, auth=None, connection_timeout=2) as d:
            d.verify_connectivity()
    except Exception as e:  # noqa: BLE001 - translated
        raise ServiceUnavailable("Neo4j", "ATTENDWISE_NEO4J_URI", uri, e) from e


def _check_http(url: str) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except OSError as e:
        raise ServiceUnavailable("S3 API", "ATTENDWISE_S3_ENDPOINT", url, e) from e

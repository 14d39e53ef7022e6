"""Face workers behind NATS request/reply, in a queue group, so they scale
across machines: `serve_faces` runs in each `attendwise face-worker`;
`NatsFaceAnalyzer` is the `FaceAnalyzer` the API uses in full mode.

Subjects sit outside the event stream's `attendwise.>` (requests are not
events): `<ns>.faces.analyse` (body: the image; header `mirrored`) and
`<ns>.faces.info` (the model's name, version and threshold). A request that
gets no answer within the timeout raises `VerifierUnavailable`: a check-in
then waits as pending, an enrolment frame is refused with a clear error;
nothing hangs, nothing is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import structlog

from adapters.errors import ServiceUnavailable
from adapters.face import FaceAnalyzer, FrameAnalysis, VerifierUnavailable, cosine_distance

log = structlog.get_logger("faces")
QUEUE = "face-workers"
NATS_SETTING = "ATTENDWISE_NATS_URL"


def subjects(namespace: str) -> tuple[str, str]:
    prefix = f"{namespace}." if namespace else ""
    return f"{prefix}faces.analyse", f"{prefix}faces.info"


async def serve_faces(analyzer: FaceAnalyzer, url: str, namespace: str, stop: asyncio.Event,
                      concurrency: int = 1) -> None:
    """Answer analysis requests until `stop` is set. The model runs in a
    thread (`concurrency` at a time), so the connection stays responsive."""
    import nats

    analyse_subject, info_subject = subjects(namespace)
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    gate = asyncio.Semaphore(concurrency)
    info = json.dumps({"model": analyzer.model, "model_version": analyzer.model_version,
                       "threshold": analyzer.threshold}).encode()

    async def on_analyse(msg: Any) -> None:
        mirrored = (msg.headers or {}).get("mirrored") == "1"
        async with gate:
            try:
                frame = await asyncio.to_thread(analyzer.analyse, msg.data, mirrored)
                body = {"failure": frame.failure, "yaw": frame.yaw, "mouth": frame.mouth,
                        "embedding": base64.b64encode(frame.embedding).decode()}
            except Exception as e:  # noqa: BLE001 - answered as an error, logged; the caller decides
                log.warning("face_analysis_failed", error=type(e).__name__, code=getattr(e, "code", None))
                body = {"error": getattr(e, "code", "ANALYSIS_FAILED"), "message": str(e),
                        "status": getattr(e, "status", 422)}
        await msg.respond(json.dumps(body).encode())

    async def on_info(msg: Any) -> None:
        await msg.respond(info)

    await nc.subscribe(analyse_subject, queue=QUEUE, cb=on_analyse)
    await nc.subscribe(info_subject, queue=QUEUE, cb=on_info)
    log.info("face_worker_ready", subject=analyse_subject, model=analyzer.model, version=analyzer.model_version)
    await stop.wait()
    await nc.drain()


class NatsFaceAnalyzer:
    """A `FaceAnalyzer` whose model runs in face workers. Thread-safe; its
    NATS connection lives on its own event-loop thread."""

    def __init__(self, url: str, namespace: str = "", timeout: float = 10.0) -> None:
        self.url, self.timeout = url, timeout
        self._analyse, self._info = subjects(namespace)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Any = None
        self._lock = threading.Lock()
        self._model: dict[str, Any] | None = None

    def _connected(self) -> Any:
        """The connection, made on first use (commands that never verify a face never connect)."""
        import nats

        with self._lock:
            if self._nc is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="faces-nats", daemon=True).start()
                try:
                    self._nc = self._call(nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1,
                                                       reconnect_time_wait=0.5), 10)
                except Exception as e:  # noqa: BLE001 - translated
                    raise ServiceUnavailable("NATS (face workers)", NATS_SETTING, self.url, e) from e
            return self._nc

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _request(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
        nc = self._connected()
        try:
            msg = self._call(nc.request(subject, body, timeout=self.timeout, headers=headers),
                             self.timeout + 2)
        except Exception as e:  # noqa: BLE001 - no worker answered in time (none running, all busy, down)
            raise VerifierUnavailable("face workers (attendwise face-worker)", NATS_SETTING, subject,
                                      f"no answer within {self.timeout:.0f} s") from e
        return json.loads(msg.data)

    def _described(self) -> dict[str, Any]:
        if self._model is None:
            self._model = self._request(self._info, b"")
        return self._model

    @property
    def model(self) -> str:
        return self._described()["model"]

    @property
    def model_version(self) -> str:
        return self._described()["model_version"]

    @property
    def threshold(self) -> float:
        return float(self._described()["threshold"])

    def analyse(self, image: bytes, mirrored: bool = False) -> FrameAnalysis:
        from domain.errors import DomainError

        body = self._request(self._analyse, image, {"mirrored": "1" if mirrored else "0"})
        if "error" in body:
            err = DomainError(body.get("message", "the image could not be analysed"))
            err.code, err.status = body["error"], body.get("status", 422)  # 413, 415: the worker's own
            raise err
        return FrameAnalysis(body["failure"], body["yaw"], body["mouth"], base64.b64decode(body["embedding"]))

    def distance(self, a: bytes, b: bytes) -> float:
        return cosine_distance(a, b)

    def close(self) -> None:
        if self._nc is not None and self._loop is not None:
            self._call(self._nc.close(), 5)
            self._loop.call_soon_threadsafe(self._loop.stop)

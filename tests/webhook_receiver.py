"""A real local HTTP receiver for webhook tests (standard library only): it
records every POST and answers 200 with a small JSON body, or the status the
test asks for with `fail_next`.

    with WebhookReceiver() as hook:
        ... POST to hook.url + "/fcm" ...
        [req] = hook.wait_for(1)
        req.json, req.headers["Idempotency-Key"]
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    path: str
    headers: Message  # case-insensitive lookups: headers["idempotency-key"]
    body: bytes
    status: int  # what the receiver answered
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._failures: list[int] = []
        self._count = 0
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next `n` requests with `status` (they are recorded all the same)."""
        with self._lock:
            self._failures.extend([status] * n)

    def requests(self) -> list[Received]:
        """Every request received, the refused ones (`fail_next`) included."""
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests() if r.status == 200]

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        while len(got := self.requests()) < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"webhook receiver at {self.url}: {len(got)} of {count} requests "
                                   f"within {timeout:.1f}s")
            time.sleep(0.02)
        return got[:count]

    def _record(self, path: str, headers: Message, body: bytes) -> tuple[int, bytes]:
        parsed_json: Any = None
        form: dict[str, str] = {}
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            parsed_json = json.loads(body or b"null")
        elif content_type.startswith("application/x-www-form-urlencoded"):
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        with self._lock:
            status = self._failures.pop(0) if self._failures else 200
            self._requests.append(Received(path, headers, body, status, parsed_json, form))
            self._count += 1
            n = self._count
        if status != 200:
            return status, json.dumps({"error": {"code": status, "message": "failed by the test"}}).encode()
        return 200, json.dumps({"name": f"projects/test/messages/{n}", "sid": f"SM{n:032d}"}).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = receiver._record(self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return None

        return Handler

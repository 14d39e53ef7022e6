"""Helpers of the hostile-input tests: a running `attendwise serve`, its
memory, and raw HTTP for request bodies no well-behaved client sends."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from tests.e2e.conftest import base_url  # noqa: F401 - the e2e stack (embedded / full) for these tests too
from tests.ml.conftest import model_home  # noqa: F401 - the provisioned face model
from tests.processes import Proc, free_port, wait_http

PASSWORD = "correct horse battery"
MB = 1024 * 1024


@dataclass
class Api:
    """A running `attendwise serve` (embedded)."""

    url: str
    proc: Proc
    data_dir: Path

    def rss(self) -> int:
        """The process's resident memory, in bytes."""
        assert self.proc.p is not None and self.proc.p.poll() is None, self.proc.log[-3000:]
        return psutil.Process(self.proc.p.pid).memory_info().rss

    @contextmanager
    def peak_growth(self) -> Iterator[list[int]]:
        """Samples the resident memory every 5 ms while the block runs; the
        list it yields then holds the peak growth over the start, in bytes
        (memory freed after a spike would not show in a reading afterwards)."""
        assert self.proc.p is not None
        process = psutil.Process(self.proc.p.pid)
        start = process.memory_info().rss
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                peak[0] = max(peak[0], process.memory_info().rss - start)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            done.set()
            sampler.join()
            peak[0] = max(peak[0], self.rss() - start)

    def answers(self) -> bool:
        return httpx.get(self.url + "/healthz", timeout=5).status_code == 200

    def sign_up(self, email: str, name: str | None = None) -> tuple[str, dict[str, str]]:
        r = httpx.post(self.url + "/users", json={"email": email, "display_name": name or email.split("@")[0],
                                                  "password": PASSWORD}, timeout=10)
        assert r.status_code == 201, r.text
        token = httpx.post(self.url + "/auth/token", data={"grant_type": "password", "username": email,
                                                           "password": PASSWORD}, timeout=10).json()["access_token"]
        return r.json()["id"], {"Authorization": f"Bearer {token}"}


@contextmanager
def serving(tmp: Path, **env: str) -> Iterator[Api]:
    """`attendwise serve` on the embedded default, rate limits off (the tests
    send many requests); afterwards its log must hold no traceback."""
    port = free_port()
    env = {"ATTENDWISE_DATA_DIR": str(tmp / "data"), "ATTENDWISE_RATE_LIMITS": "false",
           "ATTENDWISE_PUBLIC_URL": f"http://127.0.0.1:{port}", **env}
    proc = Proc(["serve", "--port", str(port)], env, tmp / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield Api(f"http://127.0.0.1:{port}", proc, tmp / "data")
    finally:
        proc.stop()
    assert "Traceback" not in proc.log, proc.log[-3000:]


@dataclass
class RawResponse:
    status: int
    body: dict
    sent: int  # body bytes the server took before it answered


def raw_post(url: str, path: str, headers: dict[str, str], body: Iterable[bytes], *,
             content_length: int | None = None, timeout: float = 30) -> RawResponse:
    """POSTs `body` chunk by chunk over a plain socket, with the given
    Content-Length, or chunked (Transfer-Encoding) without one, and stops
    sending as soon as the server answers (as a client whose upload was
    refused would): `sent` tells how much it had taken by then."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    received = b""
    sent = 0
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in body:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered (or closed)
            framed = chunk if content_length is not None else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                s.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if content_length is None:
                s.sendall(b"0\r\n\r\n")
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            received += part
            if b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
                if length and len(rest) >= length[0]:
                    break
    finally:
        s.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no HTTP response after {sent:,} bytes: {received[:300]!r}"
    status = int(head.split(b" ")[1])
    return RawResponse(status, json.loads(rest) if rest.startswith(b"{") else {}, sent)


def chunks(total: int, size: int = 256 * 1024, fill: bytes = b"\xff\xd8\xff") -> Iterator[bytes]:
    """`total` bytes in chunks of `size` (starting like a JPEG, as a hostile photo would)."""
    block = (fill * (size // len(fill) + 1))[:size]
    for start in range(0, total, size):
        yield block[: min(size, total - start)]

"""A real SMTP server that keeps what it receives, for tests, benches and
developers (aiosmtpd, on 127.0.0.1 only).

In a test:

    sink = SmtpSink().start()        # a free port; sink.url is smtp://127.0.0.1:<port>
    ... send to sink.url ...
    [mail] = sink.wait_for(lambda m: m["To"] == "ada@example.org")
    sink.fail_next(1, 451)           # the next DATA is answered 451 (550: refused for good)
    sink.stop()

As a process (what `attendwise services up smtp` starts), each message also
written to a folder so that other processes can read it:

    python -m infra.smtp_sink --port 1025 --maildir DIR     # until SIGTERM
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"
_FAILURE_TEXT = {4: "4.3.0 Temporary failure (test hook)", 5: "5.7.1 Refused (test hook)"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def read_maildir(folder: Path) -> list[EmailMessage]:
    """The messages a sink process wrote to `folder`, oldest first."""
    return [parse(p.read_bytes()) for p in sorted(folder.glob("*.eml"), key=lambda p: _order(p.name))]


def _order(name: str) -> tuple[int, int]:
    ns, n = name.removesuffix(".eml").split("-", 1)
    return int(ns), int(n)


class _Handler:
    """aiosmtpd handler; runs in the controller's thread."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self.sink._receive(envelope.original_content or envelope.content)


class SmtpSink:
    """An SMTP server on 127.0.0.1 keeping every message in memory and,
    with `maildir`, also as `<maildir>/<time_ns>-<n>.eml`."""

    def __init__(self, port: int | None = None, maildir: Path | None = None) -> None:
        self.port = port or free_port()
        self.maildir = maildir
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._failures: list[int] = []
        self._count = itertools.count(1)
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def start(self) -> SmtpSink:
        if self.maildir is not None:
            self.maildir.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_Handler(self), hostname=HOST, port=self.port,
                                      enable_SMTPUTF8=True, ready_timeout=10.0)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, code: int = 451) -> None:
        """Answer the next `n` DATA commands with `code` instead of accepting them."""
        with self._lock:
            self._failures.extend([code] * n)

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, predicate: Callable[[EmailMessage], bool] | None = None, count: int = 1,
                 timeout: float = 10.0) -> list[EmailMessage]:
        """The first `count` messages received that match `predicate` (all
        when None), waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages() if predicate is None or predicate(m)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"SMTP sink at {self.url}: {len(found)} of {count} expected messages "
                                   f"within {timeout:.1f}s ({len(self.messages())} received in all)")
            time.sleep(0.02)

    def _receive(self, raw: bytes) -> str:
        with self._lock:
            if self._failures:
                code = self._failures.pop(0)
                return f"{code} {_FAILURE_TEXT.get(code // 100, 'Refused (test hook)')}"
            n = next(self._count)
            self._messages.append(parse(raw))
        if self.maildir is not None:
            name = f"{time.time_ns()}-{n}.eml"
            tmp = self.maildir / f".{name}.tmp"
            tmp.write_bytes(raw)
            os.replace(tmp, self.maildir / name)  # readers never see half a message
        return "250 OK"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.smtp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=None, help="also write each message here as .eml")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink = SmtpSink(args.port, args.maildir).start()
    print(f"smtp sink listening on {sink.url}" + (f", writing to {args.maildir}" if args.maildir else ""),
          file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

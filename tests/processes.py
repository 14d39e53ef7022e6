"""Run AttendWise commands as real processes in tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    """An `attendwise` subprocess; its output goes to a log file the test can read."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.args, self.env, self.log_path, self.cwd = args, env, log_path, cwd
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> "Proc":
        logf = open(self.log_path, "ab")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ATTENDWISE_")}
        self.p = subprocess.Popen([sys.executable, "-m", "api.cli", *self.args], env={**inherited, **self.env},
                                  stdout=logf, stderr=subprocess.STDOUT, cwd=self.cwd or REPO)
        return self

    def kill9(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_http(url: str, timeout: float = 30, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc and proc.p and proc.p.poll() is not None:
            raise RuntimeError(f"process exited: {proc.log[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering after {timeout}s; log: {proc.log[-3000:] if proc else ''}")


def eventually(check, timeout: float = 20, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)

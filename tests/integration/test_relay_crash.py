"""The relay as a real process, killed with SIGKILL again and again while
events are appended: JetStream must end up with every event exactly once, in
log order. And with NATS down, commands are still accepted and nothing is lost."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from adapters.bus import JetStreamBus
from adapters.eventstore import ApplicationEventLog, open_event_store
from commands.messages import CommandContext, RegisterUser
from tests.processes import Proc, eventually, free_port

pytestmark = pytest.mark.slow


def stream_contents(url: str, ns: str, expected: int) -> list[tuple[int, str, str, int]]:
    async def read() -> list[tuple[int, str, str, int]]:
        bus = await JetStreamBus.connect(url, namespace=ns)
        out = []
        it = bus.stream(1)
        if expected:
            async for _, env in it:
                out.append((env.position, env.event_id, env.aggregate_id, env.aggregate_version))
                if len(out) == expected:
                    break
        await it.aclose()
        last_seq = (await bus.last())[0]
        await bus.close()
        assert last_seq == expected, f"stream holds {last_seq} messages, expected {expected}"
        return out

    return asyncio.run(read())


def test_relay_killed_20_times_publishes_every_event_exactly_once_in_order(
        pg_url: str, nats_url: str, nats_namespace: str, tmp_path: Path) -> None:
    app = open_event_store(pg_url, tmp_path / "x.sqlite3")
    env = {"ATTENDWISE_DATABASE_URL": pg_url, "ATTENDWISE_NATS_URL": nats_url,
           "ATTENDWISE_NATS_NAMESPACE": nats_namespace}
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            uid = app.register_user(RegisterUser(f"{uuid.uuid4().hex[:10]}@example.org", "R"), CommandContext())
            if random.random() < 0.3:
                user = app.get_user(uid)
                user.change_display_name("Renamed")
                app.save_stamped(CommandContext(), user)
            time.sleep(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    relay = Proc(["relay"], env, tmp_path / "relay.log").start()
    rng = random.Random(7)
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.4, 1.2))  # start-up takes ~0.5 s: some kills land mid-publish
            relay.kill9()
            relay.start()
    finally:
        stop.set()
        writer.join()
    log = ApplicationEventLog(app)
    head = log.head()
    every = log.read(0, 1_000_000)
    try:
        eventually(lambda: stream_contents_last(nats_url, nats_namespace) == head, timeout=60, interval=0.5)
    finally:
        relay.stop()
    got = stream_contents(nats_url, nats_namespace, len(every))
    assert [g[0] for g in got] == [e.position for e in every]  # every event, once, in log order
    assert [g[1] for g in got] == [e.event_id for e in every]
    assert len(every) > 200
    app.close()


def stream_contents_last(url: str, ns: str) -> int:
    async def last() -> int:
        bus = await JetStreamBus.connect(url, namespace=ns)
        try:
            return (await bus.last())[1]
        finally:
            await bus.close()

    return asyncio.run(last())


def test_with_nats_down_commands_are_accepted_and_published_once_it_is_back(
        pg_url: str, tmp_path: Path) -> None:
    if not shutil.which("nats-server"):
        pytest.fail("nats-server is not installed: run `attendwise services up nats`")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    app = open_event_store(pg_url, tmp_path / "x.sqlite3")
    relay = Proc(["relay"], {"ATTENDWISE_DATABASE_URL": pg_url, "ATTENDWISE_NATS_URL": url},
                 tmp_path / "relay.log").start()
    server = None
    try:
        for i in range(20):  # the broker is down; the event store still takes commands
            app.register_user(RegisterUser(f"down{i}@example.org", "D"), CommandContext())
        eventually(lambda: "relay_waiting" in relay.log and "ATTENDWISE_NATS_URL" in relay.log, timeout=20)
        server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js",
                                   "-sd", str(tmp_path / "js")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: _last_position(url) == ApplicationEventLog(app).head(), timeout=60, interval=0.5)
    finally:
        relay.stop()
        if server:
            server.terminate()
            server.wait(10)
        app.close()


def _last_position(url: str) -> int:
    async def last() -> int:
        try:
            bus = await JetStreamBus.connect(url, timeout=1)
        except Exception:  # noqa: BLE001 - not up yet
            return -1
        try:
            return (await bus.last())[1]
        finally:
            await bus.close()

    return asyncio.run(last())

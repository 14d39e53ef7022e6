"""The stack under test, started as real processes: on the embedded default
(one process, SQLite) and on the full stack (PostgreSQL, JetStream, and the
API, relay and projector as separate processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra import services
from tests.conftest import need
from tests.processes import Proc, free_port, wait_http


class Stack(str):
    """The API's base URL (a str), with the data folder and mode."""

    data_dir: Path
    mode: str
    env: dict[str, str]


@pytest.fixture(params=["embedded", "full"])
def base_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    env = {"ATTENDWISE_DATA_DIR": str(tmp_path / "data"), "ATTENDWISE_LOG_FORMAT": "json",
           "ATTENDWISE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    procs: list[Proc] = []
    marker = request.node.get_closest_marker("stack_env")  # e.g. @pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")
    env |= marker.kwargs if marker else {}
    if request.param == "full":
        need("neo4j")
        need("s3")
        env |= {"ATTENDWISE_DATABASE_URL": request.getfixturevalue("pg_url"),
                "ATTENDWISE_NATS_URL": request.getfixturevalue("nats_url"),
                "ATTENDWISE_NATS_NAMESPACE": request.getfixturevalue("nats_namespace"),
                "ATTENDWISE_NEO4J_URI": f"bolt://{services.HOST}:{services.PORTS['neo4j']}",
                "ATTENDWISE_NEO4J_NAMESPACE": request.getfixturevalue("nats_namespace"),
                "ATTENDWISE_S3_ENDPOINT": f"http://{services.HOST}:{services.PORTS['s3']}",
                "ATTENDWISE_S3_ACCESS_KEY": "attendwise", "ATTENDWISE_S3_SECRET_KEY": "attendwise-secret",
                "ATTENDWISE_S3_BUCKET": f"media-{request.getfixturevalue('nats_namespace')}"}
        procs += [Proc(["relay"], env, tmp_path / "relay.log").start(),
                  Proc(["project"], env, tmp_path / "project.log").start()]
        if not request.node.get_closest_marker("own_notifiers"):
            procs.append(Proc(["notify"], env, tmp_path / "notify.log").start())
    api = Proc(["serve", "--port", str(port)], env, tmp_path / "api.log").start()
    procs.append(api)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc=api)
        assert ("embedded" if request.param == "embedded" else "full stack") in api.log
        stack = Stack(url)
        stack.data_dir, stack.mode = tmp_path / "data", request.param
        stack.env = env
        yield stack
    finally:
        for p in procs:
            p.stop()
        for p in procs:
            assert "Traceback" not in p.log, p.log[-3000:]


def gql(url: str, query: str, **variables: object) -> dict:
    r = httpx.post(url + "/graphql", json={"query": query, "variables": variables}, timeout=5)
    assert r.status_code in (200, 400), r.text  # 400: the query itself is invalid
    return r.json()


def command_events(event_log: object) -> int:
    """Events the commands recorded, the notifier's delivery records aside (a
    registration also queues a verification mail, in the notifier's own time)."""
    return sum(1 for e in event_log.read(0, 1_000_000) if e.context != "notifications")  # type: ignore[attr-defined]

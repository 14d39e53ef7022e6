"""GraphQL rules, in process (FastAPI's TestClient) so the test can count the
read model's queries: sign-in and field-level access, batching, and cheap
refusals of abusive queries."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import Container, build
from api.http import create_app
from api.settings import Settings
from commands.messages import CommandContext, RegisterUser, ScheduleSeries
from tests.processes import eventually

PASSWORD = "correct horse battery"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[TestClient, Container]]:
    container = build(Settings(data_dir=tmp_path, graphql_introspection=False, max_body_bytes=4096,
                               database_url=None, nats_url=None, redis_url=None, neo4j_uri=None,
                               s3_endpoint=None))  # embedded, whatever the caller's environment says
    with TestClient(create_app(container)) as client:
        yield client, container
    container.close()


def sign_in(client: TestClient, container: Container, email: str) -> tuple[str, dict[str, str]]:
    uid = container.app.register_user(RegisterUser(email, email.split("@")[0], "UTC", PASSWORD), CommandContext())
    token = client.post("/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD})
    return str(uid), {"Authorization": f"Bearer {token.json()['access_token']}"}


def gql(client: TestClient, query: str, headers: dict[str, str] | None = None, **variables: object) -> dict:
    return client.post("/graphql", json={"query": query, "variables": variables}, headers=headers or {}).json()


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def test_me_and_email_are_for_the_signed_in_user_only(stack: tuple[TestClient, Container]) -> None:
    client, c = stack
    ada, ada_auth = sign_in(client, c, "ada@example.org")
    bob, bob_auth = sign_in(client, c, "bob@example.org")
    me = eventually(lambda: gql(client, "{ me { id email displayName } }", ada_auth).get("data"))["me"]
    assert me == {"id": ada, "email": "ada@example.org", "displayName": "ada"}
    assert codes(gql(client, "{ me { id } }")) == ["TOKEN_INVALID"]
    other = gql(client, "query($id: ID!) { user(id: $id) { displayName email } }", bob_auth, id=ada)
    assert codes(other) == ["FORBIDDEN"]  # field level: the rest of the user is still there
    assert other["data"]["user"] == {"displayName": "ada", "email": None}
    assert gql(client, "query($id: ID!) { user(id: $id) { displayName } }", id=ada)["data"]["user"]["displayName"] == "ada"
    assert codes(gql(client, "query($u: ID!) { upcomingSessions(userId: $u) { edges { cursor } } }", bob_auth, u=ada)) \
        == ["FORBIDDEN"]


def test_a_page_of_sessions_with_their_series_costs_a_constant_number_of_queries(
        stack: tuple[TestClient, Container]) -> None:
    client, c = stack
    host, auth = sign_in(client, c, "host@example.org")
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(6):  # six series, three sessions each
        c.app.schedule_series(ScheduleSeries(f"S{i}", [host], dt.datetime(2037, 1, 6 + i, 18), "UTC", 60,
                                             "FREQ=WEEKLY;COUNT=3"), CommandContext.for_user(host), now)
    query = """query($u: ID!, $n: Int!) { upcomingSessions(userId: $u, first: $n) {
        edges { node { id title series { id title description } } } } }"""

    def cost(n: int) -> int:
        before = c.readmodels.queries  # type: ignore[attr-defined]
        body = gql(client, query, auth, u=host, n=n)
        assert "errors" not in body and len(body["data"]["upcomingSessions"]["edges"]) == n
        return c.readmodels.queries - before  # type: ignore[attr-defined]

    eventually(lambda: len(c.readmodels.rows("sessions")) == 18)
    assert cost(2) == cost(18) == 3  # hosts page, sessions batch, series batch


def test_abusive_queries_are_refused_before_running(stack: tuple[TestClient, Container]) -> None:
    client, _ = stack
    deep = '{ series(id: "x") { sessions { edges { node { series { sessions { edges { node { series { id } } } } } } } } } }'
    assert codes(gql(client, deep)) == ["QUERY_TOO_DEEP"]
    aliases = "{ " + " ".join(f'a{i}: user(id: "{i}") {{ displayName }}' for i in range(6000)) + " }"
    r = client.post("/graphql", json={"query": aliases})
    assert r.status_code == 413  # bigger than the body limit of this stack
    costly = "{ " + " ".join(f'a{i}: user(id: "{i}") {{ displayName }}' for i in range(60)) + " }"
    with_cost = client.post("/graphql", json={"query": costly}).json()
    assert "errors" not in with_cost  # 60 aliases are fine
    introspection = gql(client, "{ __schema { types { name } } }")
    assert codes(introspection) == ["INTROSPECTION_DISABLED"]
    batched = client.post("/graphql", json=[{"query": "{ __typename }"}] * 50)
    assert batched.status_code == 400


def test_a_slow_graph_read_does_not_hold_up_other_requests(pg_url: str, tmp_path: Path) -> None:
    """Resolvers read PostgreSQL, Neo4j or S3 synchronously. Run on the event
    loop, one read waiting on a service that was down held up every request
    the API served (with Neo4j restarting, posts timed out after 30 s). Here
    the feed's graph read waits until another request has been answered."""
    c = build(Settings(data_dir=tmp_path, database_url=pg_url, nats_url=None, redis_url=None, neo4j_uri=None,
                       s3_endpoint=None))
    c.projectors["feed_graph"].install()
    with TestClient(create_app(c)) as client:
        try:
            _a_slow_graph_read_waits_for_another_request(client, c)
        finally:
            c.close()


def _a_slow_graph_read_waits_for_another_request(client: TestClient, c: Container) -> None:
    _, auth = sign_in(client, c, "ada@example.org")
    started, answered = threading.Event(), threading.Event()
    graph = c.graph

    class Waiting:
        def __getattr__(self, name: str) -> Any:
            return getattr(graph, name)

        def feed(self, *args: Any, **kwargs: Any) -> Any:
            started.set()
            if not answered.wait(10):
                raise RuntimeError("no other request was answered while the feed's read waited")
            return graph.feed(*args, **kwargs)

    c.graph = Waiting()  # type: ignore[assignment]
    with ThreadPoolExecutor(1) as pool:
        feed = pool.submit(gql, client, "{ feed { edges { cursor } } }", auth)
        assert started.wait(10)
        assert client.get("/healthz").status_code == 200
        answered.set()
        assert feed.result() == {"data": {"feed": {"edges": []}}}

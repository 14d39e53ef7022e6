"""Abusive GraphQL requests are refused cheaply: each with its own code in
`extensions.code`, before any resolver runs (no read-model query, no token
check). In process (FastAPI's TestClient) so the test can count the work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import Container, build
from api.graphql import MAX_COST, MAX_DEPTH, MAX_FIELDS, MAX_TOKENS
from api.http import create_app
from api.settings import Settings
from commands.messages import CommandContext, RegisterUser

PASSWORD = "correct horse battery"


class Stack:
    def __init__(self, client: TestClient, container: Container, auth: dict[str, str]) -> None:
        self.client, self.container, self.auth = client, container, auth
        self.principals = 0  # token checks (the first thing a resolver that needs the caller does)
        principal = container.app.principal

        def counted(token: str) -> Any:
            self.principals += 1
            return principal(token)

        container.app.principal = counted  # type: ignore[method-assign]

    def post(self, body: Any) -> tuple[int, dict[str, Any]]:
        r = self.client.post("/graphql", json=body, headers=self.auth)
        return r.status_code, r.json()

    def refused(self, query: str, code: str, **variables: Any) -> dict[str, Any]:
        """Posts the query and checks it was refused with `code`, having done
        no work: no read-model query, no token check."""
        work = self.work()
        status, body = self.post({"query": query, "variables": variables})
        assert status == 400 and "data" not in body, body
        assert [e["extensions"]["code"] for e in body["errors"]] == [code], body
        assert self.work() == work
        return body

    def work(self) -> tuple[int, int]:
        """Read-model queries and token checks so far."""
        return self.container.readmodels.queries, self.principals  # type: ignore[attr-defined]


def _stack(tmp_path: Path, introspection: bool) -> Iterator[Stack]:
    container = build(Settings(data_dir=tmp_path, graphql_introspection=introspection, rate_limits=False,
                               database_url=None, nats_url=None, redis_url=None, neo4j_uri=None,
                               s3_endpoint=None))  # embedded, whatever the caller's environment says
    uid = container.app.register_user(RegisterUser("ada@example.org", "Ada", "UTC", PASSWORD), CommandContext())
    with TestClient(create_app(container)) as client:
        token = client.post("/auth/token", data={"grant_type": "password", "username": "ada@example.org",
                                                 "password": PASSWORD}).json()["access_token"]
        stack = Stack(client, container, {"Authorization": f"Bearer {token}"})
        stack.uid = str(uid)  # type: ignore[attr-defined]
        yield stack
    container.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(tmp_path, introspection=False)


def nested(levels: int) -> str:
    inner = "id"
    for _ in range(levels // 4 + 1):
        inner = f"sessions {{ edges {{ node {{ series {{ {inner} }} }} }} }}"
    return f'{{ series(id: "00000000-0000-0000-0000-000000000000") {{ {inner} }} }}'


def test_a_depth_bomb_is_refused_also_through_fragments(stack: Stack) -> None:
    stack.refused(nested(40), "QUERY_TOO_DEEP")
    # fragments are transparent: each adds its own levels to the spread's
    fragments = " ".join(f"fragment F{i} on Series {{ sessions {{ edges {{ node {{ series {{ ...F{i + 1} }} }} }} }} }}"
                         for i in range(5))
    stack.refused(f'{{ series(id: "x") {{ ...F0 }} }} {fragments} fragment F5 on Series {{ id }}', "QUERY_TOO_DEEP")
    inline = "... on Series { sessions { edges { node { series { " * 3 + "id" + " } } } } }" * 3
    stack.refused(f'{{ series(id: "x") {{ {inline} }} }}', "QUERY_TOO_DEEP")
    assert MAX_DEPTH < 12


def test_a_complexity_bomb_is_refused_before_any_resolver(stack: Stack) -> None:
    pages = """query($n: Int) { communities(first: $n) { edges { node { name
               members(first: 100) { edges { node { user { id displayName } } } }
               posts(first: 100) { edges { node { text likeCount } } } } } } }"""
    body = stack.refused(pages, "QUERY_TOO_COMPLEX", n=100)
    assert f"{MAX_COST:,}" in body["errors"][0]["message"]
    stack.refused("query($n: Int) { feed(first: $n) { edges { node { id } } } }", "QUERY_TOO_COMPLEX", n=10**9)
    # defaults count too: 20 posts x 20 comments x 20 replies
    stack.refused("""{ feed { edges { node { id comments { edges { node { text author { displayName }
                  replies { text } } } } } } } }""", "QUERY_TOO_COMPLEX")
    _, fine = stack.post({"query": "query($n: Int) { feed(first: $n) { edges { node { id text } } } }",
                          "variables": {"n": 100}})
    assert "errors" not in fine, fine  # a big page of a flat list is fine


def test_alias_overloads_and_fragment_bombs_are_refused_when_parsed(stack: Stack) -> None:
    many = " ".join(f"a{i}: __typename" for i in range(MAX_FIELDS + 1))
    stack.refused(f"{{ {many} }}", "QUERY_TOO_MANY_FIELDS")
    # one response name many times: graphql-core's overlap rule is quadratic in these; never reached
    stack.refused("{ " + "a: __typename " * 1300 + "}", "QUERY_TOO_MANY_FIELDS")
    users = " ".join(f'u{i}: user(id: "{i}") {{ id displayName timeZone }}' for i in range(150))
    stack.refused(f"{{ {users} }}", "QUERY_TOO_MANY_FIELDS")
    laughs = " ".join(f"fragment L{i} on Query {{ ...L{i + 1} ...L{i + 1} }}" for i in range(30))
    stack.refused(f"{{ ...L0 }} {laughs} fragment L30 on Query {{ __typename me {{ id }} }}", "QUERY_TOO_MANY_FIELDS")
    stack.refused("{ " + "__typename " * (MAX_TOKENS + 10) + "}", "QUERY_TOO_LARGE")
    _, fine = stack.post({"query": "{ " + " ".join(f'u{i}: user(id: "{i}") {{ id }}' for i in range(60)) + " }"})
    assert "errors" not in fine, fine


def test_a_batch_is_refused_as_a_whole(stack: Stack) -> None:
    work = stack.work()
    status, body = stack.post([{"query": "{ me { id } }"}] * 50)
    assert status == 400 and [e["extensions"]["code"] for e in body["errors"]] == ["BATCH_NOT_SUPPORTED"]
    status, body = stack.post([])
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "BATCH_NOT_SUPPORTED"
    assert stack.work() == work
    # a multipart request carrying a batch ("operations" is a list) is refused the same way
    r = stack.client.post("/graphql", headers=stack.auth, data={"operations": '[{"query": "{ me { id } }"}]',
                                                                  "map": "{}"}, files={"x": ("x", b"x")})
    assert r.status_code == 400 and r.json()["errors"][0]["extensions"]["code"] == "BATCH_NOT_SUPPORTED"


def test_introspection_is_refused_when_the_setting_is_off(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.refused("{ __schema { types { name } } }", "INTROSPECTION_DISABLED")
    stack.refused('{ __type(name: "User") { fields { name } } }', "INTROSPECTION_DISABLED")
    stack.refused("{ me { id } ... on Query { __schema { queryType { name } } } }", "INTROSPECTION_DISABLED")
    _, body = stack.post({"query": "{ __typename me { __typename id } }"})
    assert body["data"]["__typename"] == "Query" and body["data"]["me"]["id"] == stack.uid  # type: ignore[attr-defined]
    assert stack.client.get("/graphql", headers={"Accept": "text/html"}).status_code == 405  # no explorer either
    monkeypatch.setenv("ATTENDWISE_GRAPHQL_INTROSPECTION", "false")
    assert Settings().graphql_introspection is False


def test_introspection_works_when_the_setting_is_on(tmp_path: Path) -> None:
    for stack in _stack(tmp_path, introspection=True):
        _, body = stack.post({"query": "{ __schema { queryType { name } } }"})
        assert body["data"]["__schema"]["queryType"]["name"] == "Query"

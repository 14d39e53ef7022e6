"""One user's registration through every layer, over HTTP, twice: on the
embedded default (one process, SQLite) and on the full stack (PostgreSQL,
JetStream, and the API, relay and projector as separate processes)."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack, gql
from tests.processes import eventually

PASSWORD = "correct horse battery"
USER_QUERY = "query($id: ID!) { user(id: $id) { id displayName timeZone registeredAt } }"


def test_register_then_read_through_graphql(base_url: str) -> None:
    r = httpx.post(base_url + "/users", json={"email": "ada@example.org", "display_name": "Ada Lovelace",
                                              "time_zone": "Europe/London", "password": PASSWORD}, timeout=10)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    user = eventually(lambda: gql(base_url, USER_QUERY, id=uid)["data"]["user"], timeout=20)
    assert user["id"] == uid and user["displayName"] == "Ada Lovelace" and user["timeZone"] == "Europe/London"

    again = httpx.post(base_url + "/users", json={"email": "ADA@example.org", "display_name": "Ada", "password": PASSWORD}, timeout=10)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "EMAIL_TAKEN"


def test_bad_input_is_a_problem_document(base_url: str) -> None:
    r = httpx.post(base_url + "/users", json={"email": "ada@example.org", "display_name": "A", "admin": True,
                                                       "password": PASSWORD})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "INVALID_INPUT" and body["status"] == 422 and body["type"].startswith("https://")
    assert {"field": "admin", "message": "Extra inputs are not permitted"} in body["errors"]
    bad_zone = httpx.post(base_url + "/users", json={"email": "b@example.org", "display_name": "B",
                                                     "time_zone": "Mars/Base", "password": PASSWORD})
    assert bad_zone.status_code == 422 and bad_zone.json()["errors"] == [{"field": "time_zone"}]
    not_json = httpx.post(base_url + "/users", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["code"] == "INVALID_INPUT"


def test_health_readiness_and_openapi(base_url: Stack) -> None:
    assert httpx.get(base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(base_url + "/readyz")
    assert ready.status_code == 200, ready.text
    expected = {"event_store", "read_models"} | ({"nats", "neo4j", "s3"} if base_url.mode == "full" else set())
    assert set(ready.json()["checks"]) == expected and set(ready.json()["checks"].values()) == {"ok"}
    spec = httpx.get(base_url + "/openapi.json").json()
    assert "/users" in spec["paths"]


def test_graphql_errors_carry_codes(base_url: str) -> None:
    body = gql(base_url, "{ nope }")
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert gql(base_url, USER_QUERY, id="not-a-uuid")["data"]["user"] is None

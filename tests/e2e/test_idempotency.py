"""Idempotency-Key: a retried command returns the first response and appends
no second event."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx

from adapters.eventstore import ApplicationEventLog, open_event_store
from tests.e2e.conftest import Stack, command_events


def head(stack: Stack) -> int:
    app = open_event_store(stack.env.get("ATTENDWISE_DATABASE_URL"), stack.data_dir / "events.sqlite3")
    try:
        return command_events(ApplicationEventLog(app))
    finally:
        app.close()


def test_same_key_twice_gives_one_event_and_the_first_response(base_url: Stack) -> None:
    body = {"email": "idem@example.org", "display_name": "Idem", "password": "correct horse battery"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = httpx.post(base_url + "/users", json=body, headers=key, timeout=10)
    after_first = head(base_url)
    second = httpx.post(base_url + "/users", json=body, headers=key, timeout=10)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
    assert head(base_url) == after_first  # no second event

    other = httpx.post(base_url + "/users", json={**body, "display_name": "Changed"}, headers=key)
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_concurrent_retries_run_the_command_once(base_url: Stack) -> None:
    body = {"email": "race@example.org", "display_name": "Race", "password": "correct horse battery"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = head(base_url)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: httpx.post(base_url + "/users", json=body, headers=key, timeout=20), range(8)))
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {201, 409} and 201 in codes
    assert all(r.json()["code"] == "IDEMPOTENCY_KEY_IN_USE" for r in results if r.status_code == 409)
    assert len({r.json()["id"] for r in results if r.status_code == 201}) == 1
    assert head(base_url) == before + 2  # one registration: user + email claim


def test_a_refused_command_is_replayed_as_refused(base_url: Stack) -> None:
    key = {"Idempotency-Key": "bad-input-1"}
    bad = {"email": "not-an-email", "display_name": "X", "password": "correct horse battery"}
    a = httpx.post(base_url + "/users", json=bad, headers=key)
    b = httpx.post(base_url + "/users", json=bad, headers=key)
    assert a.status_code == b.status_code == 422 and a.json() == b.json()
    assert httpx.post(base_url + "/users", json=bad, headers={"Idempotency-Key": "x" * 300}).status_code == 400


def test_responses_carry_a_request_id(base_url: Stack) -> None:
    r = httpx.get(base_url + "/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(httpx.get(base_url + "/healthz", headers={"X-Request-ID": "<script>"}).headers["x-request-id"]) == 32

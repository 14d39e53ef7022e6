"""Rate limits over HTTP: a brute-force login hits the limit; two API
processes sharing Redis share one limit."""

from __future__ import annotations

from pathlib import Path

import httpx

from infra import services
from tests.conftest import need
from tests.e2e.conftest import Stack
from tests.processes import Proc, free_port, wait_http


def attempt(base: str, email: str = "victim@example.org") -> httpx.Response:
    return httpx.post(base + "/auth/token", data={"grant_type": "password", "username": email,
                                                  "password": "guess guess guess"}, timeout=10)


def test_brute_force_login_hits_the_limit_with_retry_after(base_url: Stack) -> None:
    codes = [attempt(base_url).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
    limited = attempt(base_url)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["code"] == "RATE_LIMITED"
    assert attempt(base_url, "someone-else@example.org").status_code == 401  # other accounts are not locked out


def test_reset_links_to_one_address_are_limited_whether_or_not_it_is_registered(base_url: Stack) -> None:
    def ask(email: str) -> httpx.Response:
        return httpx.post(base_url + "/auth/password-reset", json={"email": email}, timeout=10)

    assert httpx.post(base_url + "/users", json={"email": "victim@example.org", "display_name": "V",
                                                 "password": "correct horse battery staple"}).status_code == 201
    for email in ("victim@example.org", "nobody@example.org"):
        codes = [ask(email).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]  # the same answers: they tell nothing about who is registered
    limited = ask("VICTIM@example.org ")
    assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMITED" and limited.headers["retry-after"]


def test_two_api_processes_share_one_limit_through_redis(pg_url: str, tmp_path: Path) -> None:
    need("redis")
    env = {"ATTENDWISE_DATABASE_URL": pg_url, "ATTENDWISE_DATA_DIR": str(tmp_path),
           "ATTENDWISE_REDIS_URL": f"redis://{services.HOST}:{services.PORTS['redis']}/0"}
    ports = [free_port(), free_port()]
    procs = [Proc(["serve", "--port", str(p)], env, tmp_path / f"api{p}.log").start() for p in ports]
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for base, proc in zip(bases, procs):
            wait_http(base + "/healthz", proc=proc)
        email = f"shared-{free_port()}@example.org"
        codes = [attempt(bases[i % 2], email).status_code for i in range(7)]
        assert codes == [401] * 5 + [429] * 2  # 5 a minute per account, counted across both processes
    finally:
        for p in procs:
            p.stop()

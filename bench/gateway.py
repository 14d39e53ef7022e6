"""Gateway benchmark: requests/s and p50/p99 latency of `POST /auth/token`
(argon2id verification) and of an authenticated GraphQL `me` query, with one
and with two API processes (embedded stack; rate limits off for the run).

    python -m bench.gateway [--seconds S] [--clients N]

The baseline, measured in the same run, is `GET /healthz`: the cost of the
HTTP stack itself on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import percentiles, print_table

PASSWORD = "correct horse battery"


def start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENDWISE_")}
    env |= {"ATTENDWISE_DATA_DIR": str(data), "ATTENDWISE_RATE_LIMITS": "false", "ATTENDWISE_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def load(urls: list[str], make: object, seconds: float, clients: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=30) as http:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await make(http)  # type: ignore[operator]
                assert r.status_code == 200, r.text
                latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies, 50, 99)
    return len(latencies) / elapsed, p50 * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ports = [18701, 18702]
        procs = [start(Path(d), p) for p in ports]
        try:
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            for u in urls:
                for _ in range(100):
                    try:
                        if httpx.get(u + "/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
            httpx.post(urls[0] + "/users", json={"email": "bench@example.org", "display_name": "B", "password": PASSWORD})
            form = {"grant_type": "password", "username": "bench@example.org", "password": PASSWORD}
            token = httpx.post(urls[0] + "/auth/token", data=form).json()["access_token"]
            me = {"query": "{ me { id displayName } }"}
            auth = {"Authorization": f"Bearer {token}"}
            time.sleep(1)  # the projector has the user
            cases = [
                ("GET /healthz (baseline)", lambda h: h.get("/healthz")),
                ("POST /auth/token (argon2id)", lambda h: h.post("/auth/token", data=form)),
                ("GraphQL me (signed in)", lambda h: h.post("/graphql", json=me, headers=auth)),
            ]
            for name, make in cases:
                for n in (1, 2):
                    rps, p50, p99 = asyncio.run(load(urls[:n], make, args.seconds, args.clients))
                    rows.append((name, str(n), f"{rps:,.0f}", f"{p50:.1f}", f"{p99:.1f}"))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    print_table(f"Gateway benchmark ({args.clients} concurrent clients, {args.seconds:.0f} s each)",
                ("request", "API processes", "requests/s", "p50 ms", "p99 ms"), rows)


if __name__ == "__main__":
    main()

"""Check-in benchmark: QR-only check-ins per second and p50/p99 latency end to
end through HTTP (`POST /checkin`: ticket signature, one-time nonce as an
event, presence, all in one group-committed transaction), and with face
verification (one `attendwise face-worker` over NATS, real photos from
../shared/faces), on the full stack (PostgreSQL, JetStream, API, relay and
projector as processes); and the latency from a check-in's answer to its
change on a host's live dashboard (WebSocket, watched from a process of its
own so the load generator's busy event loop does not delay what it sees).

    python -m bench.checkin [--members 3000] [--clients 32] [--api 1]

Members, places and tickets are prepared in-process through the application
(not timed). The baseline, measured in the same run, is `GET /healthz`
through the same HTTP stack; for face check-in, the face worker's analysis of
the same photo alone, over NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.progress import track

from api.bootstrap import build
from api.settings import Settings
from bench.report import cpu_seconds, percentiles, print_table
from commands.messages import CommandContext, RegisterUser, ReservePlace, ScheduleSeries, SetCheckInPolicy
from domain.scheduling import session_id

PASSWORD = "correct horse battery"


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def load(urls: list[str], requests: list[dict], headers: dict[str, str], clients: int,
               path: str) -> tuple[float, list[float], list[tuple[float, dict]]]:
    """POSTs every request (or GETs `path` when requests are empty dicts)
    with `clients` concurrent clients; returns (per second, latencies, answers)."""
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    answers: list[tuple[float, dict]] = []

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=60, headers=headers) as http:
            while not queue.empty():
                form = queue.get_nowait()
                t = time.perf_counter()
                photo = form.pop("photo", None) if form else None
                files = {"image": ("photo.jpg", photo, "image/jpeg")} if photo else None
                r = await (http.post(path, data=form, files=files) if form else http.get(path))
                done = time.perf_counter()
                assert r.status_code == 200, r.text
                latencies.append(done - t)
                if form:
                    answers.append((time.time(), r.json()))

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(requests) / (time.perf_counter() - started), latencies, answers


async def watch_dashboard(url: str, session: str, token: str, seen: dict[str, float], stop: asyncio.Event) -> bool:
    """Records when each check-in's change reaches a live dashboard; False if there is none."""
    import websockets

    ws_url = url.replace("http", "ws") + f"/sessions/{session}/live?access_token={token}"
    try:
        async with websockets.connect(ws_url) as ws:
            while not stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                checkin = (msg.get("change") or msg).get("checkin_id")
                if msg.get("type") == "change" and checkin:
                    seen.setdefault(checkin, time.time())
    except (OSError, websockets.exceptions.InvalidStatus, websockets.exceptions.InvalidHandshake):
        return False
    return True


def _watcher_process(url: str, session: str, token: str, ready: Any, stop: Any, out: Any) -> None:
    """`watch_dashboard` in a process of its own: a change is timed when it
    arrives, not when the load generator's busy event loop gets round to it."""
    async def run() -> tuple[bool, dict[str, float]]:
        seen: dict[str, float] = {}
        stopping = asyncio.Event()

        async def until_stopped() -> None:
            ready.set()
            await asyncio.to_thread(stop.wait)
            stopping.set()
        waiter = asyncio.create_task(until_stopped())
        watched = await watch_dashboard(url, session, token, seen, stopping)
        stopping.set()
        waiter.cancel()
        return watched, seen
    out.put(asyncio.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.checkin")
    parser.add_argument("--members", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--api", type=int, default=1, help="API processes")
    parser.add_argument("--face-members", type=int, default=60,
                        help="members checking in by face through one face worker (0: skip)")
    args = parser.parse_args()
    database_url, nats_url = os.environ.get("ATTENDWISE_DATABASE_URL"), os.environ.get("ATTENDWISE_NATS_URL")
    if not (database_url and nats_url):
        raise SystemExit("the full stack is needed: eval \"$(attendwise services env)\" first")
    import psycopg

    db = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    url_db = database_url.rsplit("/", 1)[0] + "/" + db
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENDWISE_")}
        env |= {"ATTENDWISE_DATA_DIR": d, "ATTENDWISE_DATABASE_URL": url_db, "ATTENDWISE_NATS_URL": nats_url,
                "ATTENDWISE_NATS_NAMESPACE": db, "ATTENDWISE_RATE_LIMITS": "false",
                "ATTENDWISE_LOG_LEVEL": "warning"}
        ports = [18801 + i for i in range(args.api)]
        named = {f"api-{p}" if args.api > 1 else "api": spawn(["serve", "--port", str(p)], env) for p in ports}
        named |= {"relay": spawn(["relay"], env), "projector": spawn(["project"], env)}
        if args.face_members:
            env["ATTENDWISE_MODEL_DIR"] = str(Path(".attendwise/models").resolve())
            named["face-worker"] = spawn(["face-worker"], env)
        procs = list(named.values())
        try:
            rows = run(args, Path(d), url_db, ports, {name: p.pid for name, p in named.items()})
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(20)
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print_table(f"Check-in benchmark (full stack, {args.api} API process(es), {args.clients} concurrent clients)",
                ("measure", "result", "baseline (same run)", "ratio", "target"), rows)


def face_session(app: Any, host: str, start: dt.datetime, now: dt.datetime, n: int, nats_url: str,
                 namespace: str) -> tuple[list[dict], list[float]]:
    """A face-policy session whose `n` members are enrolled with a real
    template (img62 of ../shared/faces) and hold tickets; each check-in sends
    another photo of the same person (img16). Returns the forms and, as the
    baseline, the face worker's analysis latencies alone."""
    import base64

    from adapters.face_nats import NatsFaceAnalyzer
    from domain.enrolment import FaceEnrolment

    faces = Path(__file__).resolve().parent.parent.parent / "shared" / "faces"
    analyzer = NatsFaceAnalyzer(nats_url, namespace, timeout=120)
    front, photo = (faces / "img62.jpg").read_bytes(), (faces / "img16.jpg").read_bytes()
    template = base64.b64encode(analyzer.analyse(front).embedding).decode()  # also warms the worker
    alone = []
    for _ in range(20):
        t = time.perf_counter()
        analyzer.analyse(photo)
        alone.append(time.perf_counter() - t)
    hosting = CommandContext.for_user(host)
    series = app.schedule_series(ScheduleSeries("Bench lab", [host], start, "UTC", 240), hosting, now)
    sid = session_id(series.series_id, app.get_series(series.series_id).occurrences()[0].original_start)
    app.set_checkin_policy(SetCheckInPolicy(sid, "face", 60, 60), hosting)
    forms = []
    for i in track(range(n), description="enrolled members"):
        uid = app.register_user(RegisterUser(f"f{i}@example.org", f"F{i}"), CommandContext())
        member = CommandContext.for_user(uid)
        enrolment = FaceEnrolment(user_id=str(uid))
        enrolment.enrol(template, analyzer.model, analyzer.model_version, analyzer.threshold, uuid.uuid4())
        app.save_stamped(member, enrolment)
        app.reserve_place(ReservePlace(sid), member, now)
        forms.append({"token": app.issue_ticket(sid, member, now), "device_id": "lab-door", "session_id": str(sid),
                      "photo": photo})
    analyzer.close()
    return forms, alone


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process, by PostgreSQL (all its
    processes), by nats-server and by this benchmark's own client."""
    import psutil

    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    for server in ("postgres", "nats-server"):
        out[server] = sum(cpu_seconds(p.pid) for p in psutil.process_iter(["name"]) if p.info["name"] == server)
    out["bench client"] = cpu_seconds(os.getpid())
    return out


def run(args: argparse.Namespace, data: Path, database_url: str, ports: list[int],
        pids: dict[str, int]) -> list[tuple[str, ...]]:
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for u in urls:
        for _ in range(200):
            try:
                if httpx.get(u + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    registered = httpx.post(urls[0] + "/users", json={"email": "host@example.org", "display_name": "Host",
                                                      "password": PASSWORD})
    if registered.status_code != 201:
        raise SystemExit(f"registering the host: {registered.status_code} {registered.text}")
    host = registered.json()["id"]
    token = httpx.post(urls[0] + "/auth/token", data={"grant_type": "password", "username": "host@example.org",
                                                      "password": PASSWORD}).json()["access_token"]
    container = build(Settings(data_dir=data, database_url=database_url, nats_url=None, neo4j_uri=None,
                               s3_endpoint=None, redis_url=None))
    app, now = container.app, dt.datetime.now(dt.timezone.utc)
    start = (now + dt.timedelta(minutes=30)).replace(second=0, microsecond=0, tzinfo=None)
    hosting = CommandContext.for_user(host)
    series = app.schedule_series(ScheduleSeries("Bench gala", [host], start, "UTC", 240), hosting, now)
    sid = session_id(series.series_id, app.get_series(series.series_id).occurrences()[0].original_start)
    app.set_checkin_policy(SetCheckInPolicy(sid, "qr", 60, 60), hosting)
    forms = []
    for i in track(range(args.members), description="members, places and tickets"):
        uid = app.register_user(RegisterUser(f"m{i}@example.org", f"M{i}"), CommandContext())
        member = CommandContext.for_user(uid)
        app.reserve_place(ReservePlace(sid), member, now)
        forms.append({"token": app.issue_ticket(sid, member, now), "device_id": f"gate-{i % 8}",
                      "session_id": str(sid)})
    face_forms, alone = ([], []) if not args.face_members else face_session(
        app, host, start, now, args.face_members, os.environ["ATTENDWISE_NATS_URL"], database_url.rsplit("/", 1)[1])
    container.close()
    auth = {"Authorization": f"Bearer {token}"}

    base_rate, base_lat, _ = asyncio.run(load(urls, [{}] * args.members, auth, args.clients, "/healthz"))

    import multiprocessing as mp

    spawned = mp.get_context("spawn")
    ready, stop, out = spawned.Event(), spawned.Event(), spawned.Queue()
    watcher = spawned.Process(target=_watcher_process, args=(urls[0], str(sid), token, ready, stop, out))
    watcher.start()
    ready.wait(60)
    time.sleep(1.0)  # connected, snapshot read
    pids = {**pids, "dashboard watcher": watcher.pid}
    cpu_before = cpu_by_process(pids)
    rate, lat, answers = asyncio.run(load(urls, forms, auth, args.clients, "/checkin"))
    time.sleep(2.0)  # the last changes reach the dashboard
    cpu = {name: used - cpu_before[name] for name, used in cpu_by_process(pids).items()}
    stop.set()
    dashboard, seen = out.get(timeout=60)
    watcher.join(10)
    assert all(a["outcome"] == "succeeded" for _, a in answers)
    p50, p99 = percentiles(lat, 50, 99)
    b50, b99 = percentiles(base_lat, 50, 99)
    rows = [("QR-only check-ins/s", f"{rate:,.0f}", f"{base_rate:,.0f} GET /healthz/s", f"{rate / base_rate:.0%}",
             ">= 300/s"),
            ("QR-only check-in p50 / p99 ms", f"{p50 * 1000:.1f} / {p99 * 1000:.1f}",
             f"{b50 * 1000:.1f} / {b99 * 1000:.1f} ms GET /healthz", f"{p99 / b99:.1f}x", ""),
            ]
    rows += [(f"CPU ms per QR-only check-in: {name}", f"{used / len(answers) * 1000:.2f}", "",
              f"{used / sum(cpu.values()):.0%} of all", "") for name, used in sorted(cpu.items(), key=lambda kv: -kv[1])]
    if face_forms:
        f_rate, f_lat, f_answers = asyncio.run(load(urls, face_forms, auth, 4, "/checkin"))
        assert all(a["outcome"] == "succeeded" for _, a in f_answers), f_answers[:2]
        f50, f99 = percentiles(f_lat, 50, 99)
        a50, a99 = percentiles(alone, 50, 99)
        rows += [("face check-ins/s (one face worker)", f"{f_rate:,.1f}", f"{1 / a50:,.1f}/s analysis alone",
                  f"{f_rate * a50:.0%}", ""),
                 ("face check-in p50 / p99 ms", f"{f50 * 1000:.0f} / {f99 * 1000:.0f}",
                  f"{a50 * 1000:.0f} / {a99 * 1000:.0f} ms analysis alone (over NATS)", f"{f50 / a50:.1f}x", "")]
    if dashboard:
        delays = [seen[a["checkin_id"]] - t for t, a in answers if a["checkin_id"] in seen]
        d50, d99 = percentiles(delays, 50, 99)
        rows.append(("check-in answered -> on the dashboard p50 / p99 ms", f"{d50 * 1000:.0f} / {d99 * 1000:.0f}",
                     f"{len(delays)} of {len(answers)} changes seen", "", "p99 < 250 ms"))
    else:
        rows.append(("commit -> dashboard", "not measured", "no live dashboard endpoint", "", "p99 < 250 ms"))
    return rows


if __name__ == "__main__":
    main()

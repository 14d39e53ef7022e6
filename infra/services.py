"""Install (when missing) and start the services the full stack and the tests
need, idempotently, listening on 127.0.0.1 only.

    attendwise services up [NAME ...]     start what is not running
    attendwise services status            where each listens, and whether it is up
    attendwise services env               shell exports pointing AttendWise at them
    attendwise services down [--purge]    stop them; --purge deletes their data

All data lives under one folder (ATTENDWISE_SERVICES_DIR, default
./.attendwise/services). PostgreSQL gets a random password at first start,
kept in that folder (mode 0600); nothing listens beyond loopback.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HOST = "127.0.0.1"
PORTS = {"postgres": 55432, "nats": 44222, "nats-monitor": 48222, "neo4j": 47687, "s3": 49000, "redis": 46379,
         "smtp": 41025}
INFRA = Path(__file__).resolve().parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
NATS_CONFIG = INFRA / "nats.conf"  # message size for face photos
DEBIAN_PACKAGES = {"nats": ("nats-server", "nats-server"), "redis": ("redis-server", "redis-server"),
                   "postgres": (str(PG_BIN / "pg_ctl"), "postgresql-15")}


def services_dir() -> Path:
    return Path(os.environ.get("ATTENDWISE_SERVICES_DIR", ".attendwise/services")).resolve()


def log(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def port_open(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s")


def apt_install(binary: str, package: str) -> None:
    if shutil.which(binary) or Path(binary).exists():
        return
    log(f"installing {package} from Debian packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env, stdout=subprocess.DEVNULL)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _spawn(cmd: list[str], name: str) -> None:
    """Start a long-running server detached from us, its output in NAME.log."""
    d = services_dir()
    logf = open(d / f"{name}.log", "ab")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=d)
    (d / f"{name}.pid").write_text(str(proc.pid))


def _pid_alive(name: str) -> int | None:
    f = services_dir() / f"{name}.pid"
    if not f.exists():
        return None
    try:
        pid = int(f.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (ValueError, ProcessLookupError, PermissionError):
        return None


def _stop_pid(name: str, timeout: float = 30) -> None:
    pid = _pid_alive(name)
    if pid is None:
        return
    os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(name):
        time.sleep(0.2)
    if _pid_alive(name):
        os.kill(pid, signal.SIGKILL)
    (services_dir() / f"{name}.pid").unlink(missing_ok=True)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


# ---------------------------------------------------------------- PostgreSQL
def pg_password() -> str:
    f = services_dir() / "postgres.password"
    if not f.exists():
        f.write_text(secrets.token_urlsafe(24))
        f.chmod(0o600)
    return f.read_text().strip()


def pg_url(db: str = "attendwise") -> str:
    return f"postgresql://attendwise:{pg_password()}@{HOST}:{PORTS['postgres']}/{db}"


def pg_data_dir() -> Path:
    """Under the services folder, unless (running as root) the `postgres`
    user cannot reach it there; then in /var/tmp, keyed by that folder."""
    d = services_dir() / "postgres"
    if os.geteuid() != 0 or (d / "PG_VERSION").exists():
        return d
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(services_dir().parent)],
                           check=False)
    if probe.returncode == 0:
        return d
    import hashlib

    return Path("/var/tmp") / f"attendwise-pg-{hashlib.sha256(str(services_dir()).encode()).hexdigest()[:10]}"


def pg_up() -> None:
    apt_install(*DEBIAN_PACKAGES["postgres"])
    d = pg_data_dir()
    if port_open(PORTS["postgres"]):
        if not (d / "postmaster.pid").exists():
            raise RuntimeError(f"port {PORTS['postgres']} is taken by a PostgreSQL that is not this checkout's "
                               f"({d}); stop it, or point ATTENDWISE_SERVICES_DIR at its folder")
        return
    if not (d / "PG_VERSION").exists():
        d.mkdir(parents=True, exist_ok=True)
        pw = d.parent / f"{d.name}.pwfile"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (pg_password() + "\n").encode())
        os.close(fd)
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
            shutil.chown(pw, "postgres", "postgres")
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(d), "-U", "attendwise",
                                     "--auth=scram-sha-256", f"--pwfile={pw}", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        pw.unlink()
    # random_page_cost 1.1: the data is on a local SSD (or in memory); at the default, 4, a key vault
    # look-up of 500 ids by primary key was planned as a scan of the whole table (2.3 times slower)
    conf = (f"-c listen_addresses={HOST} -c port={PORTS['postgres']} -c unix_socket_directories= "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on -c random_page_cost=1.1")
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(d), "-l", str(d / "server.log"),
                                 "-o", conf, "-w", "-t", "60", "start"]), check=True, stdout=subprocess.DEVNULL)
    wait_until(lambda: port_open(PORTS["postgres"]), "PostgreSQL", 60)
    _pg_create_databases()


def _pg_create_databases() -> None:
    import psycopg

    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for db in ("attendwise", "attendwise_test"):
            if db not in have:
                conn.execute(f'CREATE DATABASE "{db}"')


def pg_down() -> None:
    d = pg_data_dir()
    if (d / "postmaster.pid").exists():
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(d), "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- NATS
def nats_up() -> None:
    apt_install(*DEBIAN_PACKAGES["nats"])
    if port_open(PORTS["nats"]):
        return
    d = services_dir() / "nats"
    d.mkdir(parents=True, exist_ok=True)
    _spawn(["nats-server", "-c", str(NATS_CONFIG), "-a", HOST, "-p", str(PORTS["nats"]), "-m", str(PORTS["nats-monitor"]),
            "-js", "-sd", str(d), "-n", "attendwise"], "nats")

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{PORTS['nats-monitor']}/healthz?js-enabled-only=true", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(ready, "nats-server", 30)


def nats_down() -> None:
    _stop_pid("nats")


# ---------------------------------------------------------------- Redis
def redis_up() -> None:
    apt_install(*DEBIAN_PACKAGES["redis"])
    if port_open(PORTS["redis"]):
        return
    d = services_dir() / "redis"
    d.mkdir(parents=True, exist_ok=True)
    _spawn(["redis-server", "--bind", HOST, "--port", str(PORTS["redis"]), "--dir", str(d),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes"], "redis")
    wait_until(lambda: port_open(PORTS["redis"]), "Redis", 20)


def redis_down() -> None:
    _stop_pid("redis")


# ---------------------------------------------------------------- Neo4j
def neo4j_up() -> None:
    if port_open(PORTS["neo4j"]):
        return
    log("building the Neo4j launcher (first time: Maven fetches the jars)")
    subprocess.run(["bash", str(INFRA / "neo4j" / "build.sh")], check=True)
    d = services_dir() / "neo4j"
    d.mkdir(parents=True, exist_ok=True)
    _spawn(["bash", str(INFRA / "neo4j" / "run.sh"), str(d), str(PORTS["neo4j"])], "neo4j")
    wait_until(lambda: "neo4j ready" in (services_dir() / "neo4j.log").read_text(errors="replace"),
               "Neo4j", 120)


def neo4j_down() -> None:
    _stop_pid("neo4j", timeout=40)


# ---------------------------------------------------------------- S3 (moto)
def s3_up() -> None:
    if port_open(PORTS["s3"]):
        return
    _spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(PORTS["s3"])], "s3")
    wait_until(lambda: port_open(PORTS["s3"]), "S3 (moto)", 30)


def s3_down() -> None:
    _stop_pid("s3")


# ---------------------------------------------------------------- SMTP sink (aiosmtpd)
def smtp_up() -> None:
    if port_open(PORTS["smtp"]):
        return
    d = services_dir() / "smtp" / "maildir"
    d.mkdir(parents=True, exist_ok=True)
    _spawn([sys.executable, "-m", "infra.smtp_sink", "--port", str(PORTS["smtp"]), "--maildir", str(d)], "smtp")
    wait_until(lambda: port_open(PORTS["smtp"]), "SMTP sink (aiosmtpd)", 30)


def smtp_down() -> None:
    _stop_pid("smtp")


@dataclass(frozen=True)
class Service:
    name: str
    what: str
    up: Callable[[], None]
    down: Callable[[], None]
    port: int
    url: Callable[[], str]


SERVICES = [
    Service("postgres", "PostgreSQL 15", pg_up, pg_down, PORTS["postgres"], lambda: pg_url()),
    Service("nats", "nats-server (JetStream)", nats_up, nats_down, PORTS["nats"], lambda: f"nats://{HOST}:{PORTS['nats']}"),
    Service("neo4j", "Neo4j 5.26 community (embedded, Bolt)", neo4j_up, neo4j_down, PORTS["neo4j"], lambda: f"bolt://{HOST}:{PORTS['neo4j']}"),
    Service("s3", "S3 API (moto server)", s3_up, s3_down, PORTS["s3"], lambda: f"http://{HOST}:{PORTS['s3']}"),
    Service("redis", "Redis", redis_up, redis_down, PORTS["redis"], lambda: f"redis://{HOST}:{PORTS['redis']}/0"),
    Service("smtp", "SMTP sink (aiosmtpd)", smtp_up, smtp_down, PORTS["smtp"], lambda: f"smtp://{HOST}:{PORTS['smtp']}"),
]
ENV_NAMES = {"postgres": "ATTENDWISE_DATABASE_URL", "nats": "ATTENDWISE_NATS_URL", "neo4j": "ATTENDWISE_NEO4J_URI",
             "s3": "ATTENDWISE_S3_ENDPOINT", "redis": "ATTENDWISE_REDIS_URL",
             "smtp": "ATTENDWISE_SMTP_URL"}


def select(names: list[str]) -> list[Service]:
    unknown = set(names) - {s.name for s in SERVICES}
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in SERVICES)}")
    return [s for s in SERVICES if not names or s.name in names]


def up(names: list[str]) -> None:
    services_dir().mkdir(parents=True, exist_ok=True)
    for s in select(names):
        t = time.monotonic()
        was_up = port_open(s.port)
        s.up()
        log(f"{s.name:9s} {'already up' if was_up else 'started'} on {HOST}:{s.port}  ({time.monotonic() - t:.1f}s)")


def down(names: list[str], purge: bool = False) -> None:
    for s in reversed(select(names)):
        s.down()
        log(f"{s.name:9s} stopped")
    if purge and not names:
        shutil.rmtree(pg_data_dir(), ignore_errors=True)
        shutil.rmtree(services_dir(), ignore_errors=True)
        log(f"purged {services_dir()}")


def status() -> int:
    down_count = 0
    for s in SERVICES:
        ok = port_open(s.port)
        down_count += not ok
        print(f"{s.name:9s} {'up  ' if ok else 'down'}  {HOST}:{s.port:<6d} {s.what}")
    print(f"data: {services_dir()}")
    return 1 if down_count else 0


def env_exports() -> str:
    lines = []
    for s in SERVICES:
        value = s.url() if (s.name != "postgres" or (services_dir() / "postgres.password").exists()) else ""
        if value:
            lines.append(f"export {ENV_NAMES[s.name]}='{value}'")
        if value and s.name == "s3":  # moto takes any credentials
            lines += ["export ATTENDWISE_S3_ACCESS_KEY='attendwise'", "export ATTENDWISE_S3_SECRET_KEY='attendwise-secret'"]
    return "\n".join(lines)

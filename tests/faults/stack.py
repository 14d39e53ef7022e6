"""The full AttendWise stack as separate processes, on services of its own.

Used by the fault-injection tests (tests/faults) and the load generator
(bench/load.py). Nothing here touches the shared services that
`attendwise services up` runs (other people's tests use them): this stack
starts its own PostgreSQL cluster (initdb into a temporary folder, a free
port), its own nats-server (JetStream, its own store folder) and its own
Neo4j (`infra/neo4j/run.sh`), so it may stop, kill and restart them. Only
the S3 API (moto) is shared, in a bucket of its own; mail goes to an
`SmtpSink` in the calling process.

    with FullStack(root) as stack:          # services, then every process
        stack.url                           # the API
        stack.procs["relay"][0].kill9()     # then .start() again
        stack.postgres.stop(); stack.postgres.start()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from infra import services
from infra.smtp_sink import SmtpSink
from projections.catalogue import all_projections
from tests.processes import REPO, Proc, free_port, wait_http

if TYPE_CHECKING:
    from api.bootstrap import Container

HOST = "127.0.0.1"
PG_SHARED_BUFFERS_MB = 128
PG_SHARED_SEGMENT_AT_LEAST = PG_SHARED_BUFFERS_MB * 2**20 // 2  # in smaps: the one mapping this large and shared
NEO4J_RUN = REPO / "infra" / "neo4j" / "run.sh"


def _wait(check: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {tail}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


# ---------------------------------------------------------------- PostgreSQL
class Postgres:
    """A PostgreSQL 15 cluster of our own (as the `postgres` user when we are
    root, as `infra/services.py` does), on a free port, password auth."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        # the postgres user must reach the folder: not under a 0700 pytest tmp dir
        self.dir = Path(tempfile.mkdtemp(prefix="attendwise-pg-"))
        self.log = self.dir / "server.log"  # copied beside the other logs when removed
        self.kept_log = root / "postgres.log"

    def url(self, db: str = "attendwise") -> str:
        return f"postgresql://attendwise:{self.password}@{HOST}:{self.port}/{db}"

    def _run(self, *args: str) -> None:
        subprocess.run(services._as_postgres([str(services.PG_BIN / args[0]), *args[1:]]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        pwfile = Path(tempfile.mkstemp(prefix="attendwise-pgpw-")[1])
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.dir / "data"), "-U", "attendwise", "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8")
        finally:
            pwfile.unlink()
        self.start()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            c.execute('CREATE DATABASE "attendwise"')

    def start(self) -> None:
        conf = (f"-c listen_addresses={HOST} -c port={self.port} -c unix_socket_directories= "
                f"-c max_connections=400 -c shared_buffers={PG_SHARED_BUFFERS_MB}MB")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.log), "-o", conf, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def pids(self) -> list[int]:
        pidfile = self.dir / "data" / "postmaster.pid"
        if not pidfile.exists():
            return []
        main = int(pidfile.read_text().split()[0])
        try:
            return [main] + [c.pid for c in psutil.Process(main).children()]
        except psutil.NoSuchProcess:
            return []

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running (a stale pid file): its folder goes all the same
        if self.log.exists():
            shutil.copy(self.log, self.kept_log)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- NATS
class _Server:
    """A service process of ours: SIGTERM, then SIGKILL after `grace` seconds."""

    p: subprocess.Popen[bytes] | None = None
    grace = 20.0

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)

    def pids(self) -> list[int]:
        return [self.p.pid] if self.p and self.p.poll() is None else []


class Nats(_Server):
    """nats-server with JetStream, its store in a folder of ours."""

    def __init__(self, root: Path) -> None:
        self.port, self.monitor = free_port(), free_port()
        self.store = root / "jetstream"
        self.log = root / "nats.log"
        self.p: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as logf:
            self.p = subprocess.Popen(["nats-server", "-c", str(services.NATS_CONFIG), "-a", HOST, "-p", str(self.port),
                                       "-m", str(self.monitor),
                                       "-js", "-sd", str(self.store)], stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.monitor}/healthz?js-enabled-only=true",
                                            timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait(ready, "nats-server", 30, self.p, self.log)



# ---------------------------------------------------------------- Neo4j
class Neo4j(_Server):
    """The embedded Neo4j launcher (`infra/neo4j/run.sh`, built by build.sh):
    20 to 40 s to start on a small machine."""

    grace = 60.0  # it checkpoints its store on the way down

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data = root / "neo4j"
        self.log = root / "neo4j.log"
        self.p: subprocess.Popen[bytes] | None = None
        self._ready_at = 0  # log size when the current start began

    @property
    def uri(self) -> str:
        return f"bolt://{HOST}:{self.port}"

    def launch(self) -> None:
        """Start without waiting (`wait_ready` waits)."""
        self._ready_at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as logf:
            self.p = subprocess.Popen(["bash", str(NEO4J_RUN), str(self.data), str(self.port)], stdout=logf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                      env={**os.environ, "NEO4J_HEAP": os.environ.get("NEO4J_HEAP", "512m")})

    def wait_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            with open(self.log, "rb") as f:
                f.seek(self._ready_at)
                return b"neo4j ready" in f.read()

        _wait(ready, "Neo4j", timeout, self.p, self.log)

    def start(self) -> None:
        self.launch()
        self.wait_ready()



# ---------------------------------------------------------------- the stack
class FullStack:
    """Services of our own, then the AttendWise processes, by kind:
    `api`, `relay`, `projector` (the read models), `graph-projector` (the
    Neo4j feed graph), `notifier`, `face-worker`. Each kind is a list of
    `Proc`s, restartable after a kill."""

    def __init__(self, root: Path, *, notifiers: int = 1, face_workers: int = 1,
                 settings: dict[str, str] | None = None, s3_endpoint: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.postgres, self.nats, self.neo4j = Postgres(root), Nats(root), Neo4j(root)
        self.smtp = SmtpSink()
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.env: dict[str, str] = {
            "ATTENDWISE_DATA_DIR": str(root / "data"), "ATTENDWISE_DATABASE_URL": self.postgres.url(),
            "ATTENDWISE_NATS_URL": self.nats.url, "ATTENDWISE_NEO4J_URI": self.neo4j.uri,
            "ATTENDWISE_SMTP_URL": self.smtp.url, "ATTENDWISE_PUBLIC_URL": self.url,
            "ATTENDWISE_MODEL_DIR": str(REPO / ".attendwise" / "models"),
            "ATTENDWISE_RATE_LIMITS": "false",  # the clients all come from one address
            "ATTENDWISE_LOG_FORMAT": "json",
        }
        s3 = s3_endpoint or os.environ.get("ATTENDWISE_S3_ENDPOINT")
        if s3:
            self.env |= {"ATTENDWISE_S3_ENDPOINT": s3, "ATTENDWISE_S3_ACCESS_KEY": "attendwise",
                         "ATTENDWISE_S3_SECRET_KEY": "attendwise-secret",
                         "ATTENDWISE_S3_BUCKET": f"faults-{uuid.uuid4().hex[:10]}"}
        self.env |= settings or {}
        logs = root / "logs"
        logs.mkdir(exist_ok=True)

        def proc(kind: str, i: int, args: list[str]) -> Proc:
            return Proc(args, self.env, logs / f"{kind}-{i}.log")

        self.procs: dict[str, list[Proc]] = {
            "api": [proc("api", 0, ["serve", "--port", str(self.port)])],
            "relay": [proc("relay", 0, ["relay"])],
            "projector": [proc("projector", 0, ["project", *all_projections()])],  # the read models
            "graph-projector": [proc("graph-projector", 0, ["project", "feed_graph"])],
            "notifier": [proc("notifier", i, ["notify"]) for i in range(notifiers)],
            "face-worker": [proc("face-worker", i, ["face-worker"]) for i in range(face_workers)],
        }

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FullStack":
        """Services (Neo4j's slow start overlapping the others), then every process."""
        self.smtp.start()
        self.neo4j.launch()
        self.postgres.init()
        self.nats.start()
        self.neo4j.wait_ready()
        for p in self.all_procs():
            p.start()
        self.wait_api()
        for worker in self.procs["face-worker"]:
            self.wait_face_worker(worker)
        return self

    def wait_api(self, timeout: float = 60) -> None:
        wait_http(self.url + "/healthz", timeout, proc=self.procs["api"][0])

    def wait_face_worker(self, worker: Proc, timeout: float = 120) -> None:
        """Its model is loaded and it answers (it logs `face_worker_ready` at info)."""
        def ready() -> bool:
            if worker.p is not None and worker.p.poll() is not None:
                raise RuntimeError(f"face worker exited: {worker.log[-2000:]}")
            return "face_worker_ready" in worker.log

        _wait(ready, "face worker", timeout)

    def all_procs(self) -> list[Proc]:
        return [p for kind in self.procs.values() for p in kind]

    def stop(self) -> None:
        """Every process and service of ours, whatever state they are in."""
        for p in self.all_procs():
            if p.p is not None and p.p.poll() is None:
                p.p.send_signal(signal.SIGCONT)  # a face worker left stopped would never see SIGTERM
        for p in self.all_procs():
            p.stop()
        self.neo4j.stop()
        self.nats.stop()
        self.postgres.remove()
        self.smtp.stop()

    def __enter__(self) -> "FullStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ observing
    def pids(self) -> dict[str, list[int]]:
        """Process name -> pids (PostgreSQL: the postmaster and its children)."""
        out: dict[str, list[int]] = {"postgres": self.postgres.pids(), "nats-server": self.nats.pids(),
                                     "neo4j": self.neo4j.pids()}
        for kind, procs in self.procs.items():
            for i, p in enumerate(procs):
                if p.p is not None and p.p.poll() is None:
                    out[f"{kind}-{i}" if len(procs) > 1 else kind] = [p.p.pid]
        return out

    def rss(self) -> dict[str, int]:
        """Resident memory (bytes) of each process of the stack. PostgreSQL's
        is the proportional set size summed over its processes (they share
        memory: summing their RSS would count it once per backend), in two
        parts: `postgres`, its processes' own memory, and `postgres buffer
        cache`, the pages of its shared memory segment in use. That segment
        (`shared_buffers`, 128 MB here, and its bookkeeping) is sized at
        start; its pages become resident as data is first cached in them,
        so it fills as the log grows, up to its size, and no further."""
        out = {}
        for name, pids in self.pids().items():
            total = cache = 0
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    if name != "postgres":
                        total += p.memory_info().rss
                        continue
                    for m in p.memory_maps(grouped=False):
                        shared_segment = m.perms.endswith("s") and m.size >= PG_SHARED_SEGMENT_AT_LEAST
                        cache += m.pss if shared_segment else 0
                        total += 0 if shared_segment else m.pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            out[name] = total
            if name == "postgres":
                out["postgres buffer cache"] = cache
        return out

    # ------------------------------------------------------------ in this process
    @contextlib.contextmanager
    def container(self) -> Iterator[Container]:
        """The application on this stack's stores, in this process: for
        seeding and for checking (no face model, no bus)."""
        from api.bootstrap import build
        from api.settings import Settings

        c = build(Settings(data_dir=self.root / "data", database_url=self.postgres.url(), nats_url=None,
                           neo4j_uri=self.neo4j.uri, s3_endpoint=None, redis_url=None,
                           model_dir=self.root / "no-model"))
        try:
            yield c
        finally:
            c.close()

    def enrol_faces(self, user_ids: list[str], photo: Path) -> None:
        """Enrol members' faces with one template (the face workers analyse
        `photo`), straight through the application as bench/checkin.py does:
        the liveness challenge is not what these runs exercise."""
        import base64

        from adapters.face_nats import NatsFaceAnalyzer
        from commands.messages import CommandContext
        from domain.enrolment import FaceEnrolment

        analyzer = NatsFaceAnalyzer(self.nats.url, self.env.get("ATTENDWISE_NATS_NAMESPACE", ""), timeout=60)
        try:
            template = base64.b64encode(analyzer.analyse(photo.read_bytes()).embedding).decode()
            with self.container() as c:
                for uid in user_ids:
                    enrolment = FaceEnrolment(user_id=uid)
                    enrolment.enrol(template, analyzer.model, analyzer.model_version, analyzer.threshold,
                                    uuid.uuid4())
                    c.app.save_stamped(CommandContext.for_user(uid), enrolment)
        finally:
            analyzer.close()

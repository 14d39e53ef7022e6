"""The `attendwise` command line, run as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.processes import REPO, Proc, free_port, wait_http


def attendwise(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ATTENDWISE_")}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env={**inherited, **(env or {})}, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_help_explains_every_subcommand() -> None:
    out = attendwise("--help")
    assert out.returncode == 0
    for command in ("serve", "relay", "project", "rebuild", "projections", "services", "notify", "notifications"):
        assert f"    {command}" in out.stdout


def test_rebuild_status_and_unknown_names_on_the_embedded_default(tmp_path: Path) -> None:
    from adapters.eventstore import open_event_store
    from commands.messages import CommandContext, RegisterUser

    env = {"ATTENDWISE_DATA_DIR": str(tmp_path)}
    app = open_event_store(None, tmp_path / "events.sqlite3")
    for i in range(25):
        app.register_user(RegisterUser(f"cli{i}@example.org", f"Cli {i}"), CommandContext())
    app.close()

    status = attendwise("projections", "status", env=env)
    assert status.returncode == 0 and "users" in status.stdout and " 50" in status.stdout  # 50 behind

    rebuilt = attendwise("rebuild", "users", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "users: rebuilt to position 50" in rebuilt.stdout
    assert "events/s" in rebuilt.stdout + rebuilt.stderr  # the progress bar

    from adapters.readmodels import SQLiteReadModelStore
    from projections.users import USERS

    store = SQLiteReadModelStore(tmp_path / "readmodels.sqlite3")
    store.install([USERS])
    assert len(store.rows("users")) == 25 and store.position("users") == 50

    after = attendwise("projections", "status", env=env)
    users_line = next(line for line in after.stdout.splitlines() if line.startswith("users"))
    assert users_line.split()[1:] == ["50", "0"]

    unknown = attendwise("rebuild", "nope", env=env)
    assert unknown.returncode == 2 and "unknown projection(s) nope" in unknown.stderr


def test_a_missing_postgres_is_named_with_its_setting(tmp_path: Path) -> None:
    out = attendwise("projections", "status", env={"ATTENDWISE_DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{free_port()}/x"})
    assert out.returncode == 2
    assert "PostgreSQL is unavailable" in out.stderr and "ATTENDWISE_DATABASE_URL" in out.stderr
    assert "Traceback" not in out.stderr and ":pw@" not in out.stderr


def test_readyz_is_503_with_retry_after_naming_each_missing_service(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    api = Proc(["serve", "--port", str(port)], {"ATTENDWISE_DATABASE_URL": pg_url,
                                               "ATTENDWISE_NATS_URL": f"nats://127.0.0.1:{free_port()}",
                                               "ATTENDWISE_NEO4J_URI": f"bolt://127.0.0.1:{free_port()}",
                                               "ATTENDWISE_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                               "ATTENDWISE_S3_ACCESS_KEY": "k", "ATTENDWISE_S3_SECRET_KEY": "s"},
               tmp_path / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=api)
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"]
        checks = r.json()["checks"]
        assert checks["event_store"] == "ok" and checks["read_models"] == "ok"
        assert "ATTENDWISE_NATS_URL" in checks["nats"]
        assert "Neo4j" in checks["neo4j"] and "ATTENDWISE_NEO4J_URI" in checks["neo4j"]
        assert "S3" in checks["s3"] and "ATTENDWISE_S3_ENDPOINT" in checks["s3"]
    finally:
        api.stop()


def test_admin_grant_role_puts_the_role_in_the_next_token(tmp_path: Path) -> None:
    from adapters.tokens import unverified

    env = {"ATTENDWISE_DATA_DIR": str(tmp_path)}
    port = free_port()
    api = Proc(["serve", "--port", str(port)], env, tmp_path / "api.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc=api)
        body = {"email": "op@example.org", "display_name": "Op", "password": "correct horse battery"}
        assert httpx.post(base + "/users", json=body).status_code == 201
        form = {"grant_type": "password", "username": "op@example.org", "password": "correct horse battery"}
        before = httpx.post(base + "/auth/token", data=form).json()
        assert unverified(before["access_token"])["roles"] == ["member"]
        out = attendwise("admin", "grant-role", "op@example.org", "platform_admin", env=env)
        assert out.returncode == 0, out.stderr
        refreshed = httpx.post(base + "/auth/token", data={"grant_type": "refresh_token",
                                                           "refresh_token": before["refresh_token"]}).json()
        assert unverified(refreshed["access_token"])["roles"] == ["member", "platform_admin"]
        bad = attendwise("admin", "grant-role", "op@example.org", "emperor", env=env)
        assert bad.returncode == 2 and "role must be one of" in bad.stderr
    finally:
        api.stop()


def test_keys_rotate_and_retire(tmp_path: Path) -> None:
    env = {"ATTENDWISE_DATA_DIR": str(tmp_path)}
    first = attendwise("keys", "list", env=env).stdout.split()[0]
    rotated = attendwise("keys", "rotate", env=env)
    assert rotated.returncode == 0 and "new active key" in rotated.stdout
    keys = [line.split()[0] for line in rotated.stdout.splitlines()[1:]]
    assert first in keys and len(keys) == 2
    active = [line.split()[0] for line in rotated.stdout.splitlines() if "(active)" in line][0]
    assert active != first
    assert attendwise("keys", "retire", active, env=env).returncode == 2  # never the active key
    retired = attendwise("keys", "retire", first, env=env)
    assert retired.returncode == 0 and first not in attendwise("keys", "list", env=env).stdout


def test_dead_letters_are_listed_and_retried_from_the_command_line(tmp_path: Path) -> None:
    """A permanent SMTP refusal makes a dead letter at once; the operator lists
    it and retries it; the next run of the notifier delivers it."""
    import asyncio

    from api.bootstrap import build
    from api.notifier import build_notifier
    from api.settings import Settings
    from commands.messages import CommandContext, RegisterUser
    from infra.smtp_sink import SmtpSink

    with SmtpSink() as sink:
        settings = Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None, neo4j_uri=None,
                            s3_endpoint=None, smtp_url=sink.url)
        c = build(settings)
        c.app.register_user(RegisterUser("dead@example.org", "Dee"), CommandContext())
        [registered] = c.event_log.read(0, 10)[:1]
        notifier = build_notifier(c)
        sink.fail_next(1, 550)
        asyncio.run(notifier.on_event(registered))
        c.close()

        env = {"ATTENDWISE_DATA_DIR": str(tmp_path), "ATTENDWISE_SMTP_URL": sink.url}
        listed = attendwise("notifications", "dead-letters", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "1 dead letter" in listed.stdout and "email_verification" in listed.stdout and "550" in listed.stdout
        retried = attendwise("notifications", "dead-letters", "--retry", env=env)
        assert retried.returncode == 0 and "1 dead letter(s) requeued" in retried.stdout
        assert "0 dead letter" in attendwise("notifications", "dead-letters", env=env).stdout
        assert not sink.messages()

        c = build(settings)
        c.projectors["notifications"].catch_up(c.event_log)
        assert asyncio.run(build_notifier(c).sweep()) == 1
        [mail] = sink.messages()
        assert mail["To"] == "dead@example.org"
        c.close()


def test_audit_seal_and_verify_find_a_tampered_event(tmp_path: Path) -> None:
    import json
    import sqlite3

    from adapters.eventstore import open_event_store
    from commands.messages import CommandContext, RegisterUser

    env = {"ATTENDWISE_DATA_DIR": str(tmp_path)}
    app = open_event_store(None, tmp_path / "events.sqlite3")
    for i in range(10):
        app.register_user(RegisterUser(f"audit{i}@example.org", f"Audit {i}"), CommandContext())
    app.close()
    sealed = attendwise("audit", "seal", env=env)
    assert sealed.returncode == 0 and "20 event(s) sealed" in sealed.stdout
    ok = attendwise("audit", "verify", env=env)
    assert ok.returncode == 0 and "ok: 20 events" in ok.stdout
    [checkpoint] = json.loads(attendwise("audit", "checkpoints", env=env).stdout)
    assert checkpoint["position"] == 20 and checkpoint["kid"] and checkpoint["signature"]

    db = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None)
    [(touched,)] = db.execute("SELECT originator_id FROM stored_events WHERE rowid = 7").fetchall()
    [(untouched,)] = db.execute("SELECT originator_id FROM stored_events WHERE rowid = 9").fetchall()
    db.execute("DROP TRIGGER stored_events_no_update")
    db.execute("UPDATE stored_events SET state = state || x'00' WHERE rowid = 7")
    db.close()
    bad = attendwise("audit", "verify", env=env)
    assert bad.returncode == 1 and "TAMPERED: position 7: altered" in bad.stderr
    one = attendwise("audit", "verify", "--aggregate", touched, env=env)  # its own chain only, no walk of the log
    assert one.returncode == 1 and "TAMPERED: position 7: altered (version 1 differs" in one.stderr
    other = attendwise("audit", "verify", "--aggregate", untouched, env=env)
    assert other.returncode == 0 and "1 sealed event(s) as sealed" in other.stdout
    missing = attendwise("audit", "verify", "--aggregate", "00000000-0000-0000-0000-000000000000", env=env)
    assert missing.returncode == 1 and "no events of aggregate" in missing.stderr

"""Shared fixtures. Tests that need a real service use the ones `infra/`
starts (`attendwise services up`). When a service is not running they are
skipped with the command to start it, unless ATTENDWISE_REQUIRE_SERVICES=1
(set by the README's test command and CI), where a missing service fails."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import services

REQUIRE = os.environ.get("ATTENDWISE_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parent.parent


def need(service: str) -> None:
    port = services.PORTS[service]
    try:
        socket.create_connection((services.HOST, port), timeout=0.5).close()
    except OSError:
        msg = f"{service} is not running on {services.HOST}:{port}: run `attendwise services up {service}`"
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    need("postgres")
    return services.pg_url("postgres")


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def nats_url() -> str:
    need("nats")
    return f"nats://{services.HOST}:{services.PORTS['nats']}"


@pytest.fixture
def nats_namespace(nats_url: str) -> Iterator[str]:
    """A namespace (own stream) on the real NATS server for one test."""
    import asyncio

    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns

    async def drop() -> None:
        import nats

        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(f"ATTENDWISE_{ns.upper()}")
        except Exception:  # noqa: BLE001 - never created
            pass
        await nc.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The S3 API (moto's server) that infra/ starts; any credentials work."""
    need("s3")
    return f"http://{services.HOST}:{services.PORTS['s3']}"


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def neo4j_uri() -> str:
    need("neo4j")
    return f"bolt://{services.HOST}:{services.PORTS['neo4j']}"

"""The services `infra/` starts really work, through the clients we use."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import uuid

import pytest

from infra import services
from tests.conftest import need


def test_postgres_answers_a_query(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0] == 15
        assert c.execute("SELECT current_setting('listen_addresses')").fetchone()[0] == "127.0.0.1"


def test_jetstream_publish_and_durable_consume(nats_url: str) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        name = f"SMOKE_{uuid.uuid4().hex[:8].upper()}"
        await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
        try:
            for i in range(3):
                await js.publish(f"{name.lower()}.x", str(i).encode())
            sub = await js.pull_subscribe(f"{name.lower()}.>", durable="smoke", stream=name)
            msgs = await sub.fetch(2, timeout=5)
            for m in msgs:
                await m.ack()
            await sub.unsubscribe()
            again = await js.pull_subscribe(f"{name.lower()}.>", durable="smoke", stream=name)
            rest = await again.fetch(1, timeout=5)  # the durable resumes after what was acked
            assert [m.data for m in msgs + rest] == [b"0", b"1", b"2"]
        finally:
            await js.delete_stream(name)
            await nc.close()

    asyncio.run(run())


def test_neo4j_cypher_write_and_read_over_bolt() -> None:
    need("neo4j")
    import neo4j

    key = uuid.uuid4().hex
    with neo4j.GraphDatabase.driver(f"bolt://{services.HOST}:{services.PORTS['neo4j']}", auth=None) as driver:
        driver.execute_query("CREATE (:Smoke {key: $key, n: 42})", key=key)
        records, _, _ = driver.execute_query("MATCH (s:Smoke {key: $key}) RETURN s.n AS n", key=key)
        assert [r["n"] for r in records] == [42]
        driver.execute_query("MATCH (s:Smoke {key: $key}) DELETE s", key=key)


def test_s3_put_and_get_through_the_minio_sdk() -> None:
    need("s3")
    from minio import Minio

    client = Minio(f"{services.HOST}:{services.PORTS['s3']}", access_key="test", secret_key="test-secret", secure=False)
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    data = b"attendwise" * 100
    client.put_object(bucket, "hello.txt", io.BytesIO(data), len(data), content_type="text/plain")
    got = client.get_object(bucket, "hello.txt")
    try:
        assert got.read() == data
    finally:
        got.close()
        got.release_conn()
    client.remove_object(bucket, "hello.txt")
    client.remove_bucket(bucket)


@pytest.mark.parametrize("service", ["postgres", "nats", "neo4j", "s3", "redis"])
def test_services_listen_on_loopback_only(service: str) -> None:
    need(service)
    import psutil

    listeners = [c for c in psutil.net_connections("inet")
                 if c.status == "LISTEN" and c.laddr.port == services.PORTS[service]]
    def loopback(ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        mapped = getattr(addr, "ipv4_mapped", None)
        return (mapped or addr).is_loopback

    assert listeners and all(loopback(c.laddr.ip) for c in listeners)

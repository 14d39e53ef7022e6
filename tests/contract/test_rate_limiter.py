"""Contract of the rate limiter: in memory and in the real Redis."""

from __future__ import annotations

import time
import uuid

import pytest

from adapters.errors import ServiceUnavailable
from adapters.ratelimit import InMemoryRateLimiter, Limit, RateLimiter, RedisRateLimiter
from infra import services
from tests.conftest import need


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "memory":
        return InMemoryRateLimiter()
    need("redis")
    return RedisRateLimiter(f"redis://{services.HOST}:{services.PORTS['redis']}/0")


def test_a_burst_then_refusal_with_the_wait(limiter: RateLimiter) -> None:
    key, limit = f"t:{uuid.uuid4()}", Limit(rate=2.0, burst=3)
    assert [limiter.take(key, limit) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take(key, limit)
    assert 0.3 < wait <= 0.5  # half a second per token at 2/s, less the moment already passed
    assert limiter.take(f"t:{uuid.uuid4()}", limit) == 0.0  # other buckets are untouched


def test_tokens_come_back_with_time(limiter: RateLimiter) -> None:
    key, limit = f"t:{uuid.uuid4()}", Limit(rate=20.0, burst=1)
    assert limiter.take(key, limit) == 0.0
    assert limiter.take(key, limit) > 0
    time.sleep(0.1)
    assert limiter.take(key, limit) == 0.0


def test_unreachable_redis_names_the_setting() -> None:
    with pytest.raises(ServiceUnavailable) as e:
        RedisRateLimiter("redis://127.0.0.1:1/0")
    assert "Redis" in str(e.value) and "ATTENDWISE_REDIS_URL" in str(e.value)

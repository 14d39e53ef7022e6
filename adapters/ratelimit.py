"""Rate limits: token buckets, in memory (one process) or in Redis (shared
by every API process). Port `RateLimiter`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from adapters.errors import ServiceUnavailable

REDIS_SETTING = "ATTENDWISE_REDIS_URL"


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens added per second
    burst: int  # bucket size

    @classmethod
    def per_minute(cls, n: int, burst: int | None = None) -> "Limit":
        return cls(n / 60.0, burst or n)


class RateLimiter(Protocol):
    """Port. `take(key, limit)` spends one token from the bucket `key`;
    returns 0.0 when allowed, else the seconds until a token is available."""

    def take(self, key: str, limit: Limit) -> float: ...


class InMemoryRateLimiter:
    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, limit: Limit) -> float:
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            tokens, at = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - at) * limit.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / limit.rate


_LUA = """
local key, rate, burst, now = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', key, 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """The same bucket, updated atomically by a Lua script on Redis's clock."""

    def __init__(self, url: str) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self.url = url
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            self.client.ping()
            self._script = self.client.register_script(_LUA)
        except self._errors as e:
            raise ServiceUnavailable("Redis", REDIS_SETTING, url, e) from e

    def take(self, key: str, limit: Limit) -> float:
        try:
            seconds, micros = self.client.time()  # one clock for every API process
            return float(self._script(keys=[f"attendwise:rl:{key}"],
                                      args=[limit.rate, limit.burst, seconds + micros / 1e6]))
        except self._errors as e:
            raise ServiceUnavailable("Redis", REDIS_SETTING, self.url, e) from e

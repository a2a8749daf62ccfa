"""Token buckets for rate limits: in this process, or in Redis so that every replica counts against the same ones.

A bucket holds up to `limit` and refills at `limit` a minute. A request takes its cost from each of its buckets
at once, or from none of them: a request refused for tokens does not use up one of the requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Take:
    bucket: str  # OWNER:KIND
    limit: int
    cost: int

    def __post_init__(self) -> None:
        if self.cost < 0 or self.limit < 1:
            raise ValueError(f"a take of {self.cost} from a bucket of {self.limit}")


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    levels: list[float]  # each bucket's level after the take (or, when refused, as it stands)
    wait_seconds: float  # when refused: until every bucket could pay


class RateBuckets(Protocol):
    async def take(self, takes: list[Take]) -> Outcome: ...

    async def close(self) -> None: ...


def _refilled(level: float, at: float, now: float, limit: int) -> float:
    return min(float(limit), level + max(0.0, now - at) * limit / 60.0)


class MemoryBuckets:
    """Buckets of this process (one replica): no await between reading and writing, so takes are atomic."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}

    async def take(self, takes: list[Take]) -> Outcome:
        now = time.monotonic()
        levels = [_refilled(*self._state.get(t.bucket, (float(t.limit), now)), now, t.limit) for t in takes]
        short = [(t.cost - level) * 60.0 / t.limit for t, level in zip(takes, levels, strict=True) if level < t.cost]
        allowed = not short
        if allowed:
            levels = [level - t.cost for t, level in zip(takes, levels, strict=True)]
        for t, level in zip(takes, levels, strict=True):
            self._state[t.bucket] = (level, now)
        return Outcome(allowed, levels, max(short, default=0.0))

    async def close(self) -> None:
        """Nothing is held open."""


# Atomic in Redis; the server's clock, so that replicas whose clocks differ still agree.
_TAKE_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local levels = {}
local allowed = 1
local wait = 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(state[1]) or limit
  local at = tonumber(state[2]) or now
  level = math.min(limit, level + math.max(0, now - at) * limit / 60)
  levels[i] = level
  if level < cost then
    allowed = 0
    wait = math.max(wait, (cost - level) * 60 / limit)
  end
end
local out = {allowed, tostring(wait)}
for i = 1, #KEYS do
  local level = levels[i]
  if allowed == 1 then level = level - tonumber(ARGV[2 * i]) end
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[i], 120)
  table.insert(out, tostring(level))
end
return out
"""


class RedisBuckets:
    """Buckets in Redis, shared by every replica that names the same server (and `prefix`)."""

    def __init__(self, url: str, prefix: str = "oasis:ratelimit:") -> None:
        import redis.asyncio

        # Short timeouts: a Redis that does not answer must cost a request little (the limiter then lets it by).
        self._redis: Any = redis.asyncio.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self._script = self._redis.register_script(_TAKE_SCRIPT)

    async def check(self, where: str) -> None:
        """Raises ConfigError, in one line, when the server at `where` does not answer or refuses us: a wrong
        URL or password shows at start-up, where later the limiter would quietly let every request by."""
        import redis.exceptions

        from oasis.settings import ConfigError

        try:
            await self._redis.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise ConfigError(f"redis_url: {where} cannot be used: {exc}") from None

    async def take(self, takes: list[Take]) -> Outcome:
        arguments: list[int] = []
        for t in takes:
            arguments += [t.limit, t.cost]
        # One owner's buckets share a hash tag, so that a Redis Cluster keeps them on one node for the script.
        keys = [f"{self._prefix}{{{t.bucket.rsplit(':', 1)[0]}}}:{t.bucket.rsplit(':', 1)[1]}" for t in takes]
        answer = await self._script(keys=keys, args=arguments)
        return Outcome(bool(int(answer[0])), [float(level) for level in answer[2:]], float(answer[1]))

    async def close(self) -> None:
        await self._redis.aclose()

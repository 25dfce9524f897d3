"""Token buckets: documented limits, shared across processes through Redis, paused by a 429."""
from __future__ import annotations

import time

import pytest
import redis as redis_lib

from connectors.ratelimit import LIMITS, Limiter, Rate
from hub.errors import RetryLater


def test_rates_parse_like_the_documentation_writes_them():
    assert Rate.parse("75/s") == Rate(75, 1.0)
    assert Rate.parse("750/m") == Rate(750, 60.0)
    assert Rate.parse("100/10s") == Rate(100, 10.0)
    with pytest.raises(ValueError):
        Rate.parse("fast")


def test_documented_limits():
    assert LIMITS["klaviyo:profile-bulk-import-jobs"] == (Rate(10, 1), Rate(150, 60))
    assert LIMITS["klaviyo:events"] == (Rate(350, 1), Rate(3500, 60))
    assert LIMITS["hubspot:api"] == (Rate(100, 10),)
    assert LIMITS["activecampaign:api"] == (Rate(5, 1),)


def test_burst_then_wait_for_a_token():
    limiter = Limiter()
    assert [limiter.take("activecampaign:api") for _ in range(5)] == [0.0] * 5
    assert 0 < limiter.take("activecampaign:api") <= 0.2


def test_steady_limit_binds_after_the_burst():
    limiter = Limiter()
    rates = (Rate(100, 1), Rate(3, 60))
    assert [limiter.take("k", rates) for _ in range(3)] == [0.0] * 3
    assert limiter.take("k", rates) > 15  # the per-minute bucket is empty: a token every 20 s


def test_acquire_sleeps_until_a_token_or_gives_up():
    slept = []
    limiter = Limiter(sleep=lambda s: (slept.append(s), time.sleep(s)), max_wait=5)
    fast = (Rate(1, 0.05),)
    limiter.acquire("k", fast)
    limiter.acquire("k", fast)
    assert len(slept) >= 1 and all(0 < s <= 0.05 for s in slept)
    slow = (Rate(1, 60),)
    limiter.acquire("slow", slow)
    with pytest.raises(RetryLater) as raised:  # the next token is a minute away: give the batch back
        limiter.acquire("slow", slow)
    assert raised.value.retry_after > 55


@pytest.mark.redis
def test_buckets_and_pauses_are_shared_through_redis(redis_server):
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushdb()
    worker_a, worker_b = Limiter(client), Limiter(client)
    taken = [w.take("activecampaign:api") for w in (worker_a, worker_b) * 3]
    assert taken[:5] == [0.0] * 5 and 0 < taken[5] <= 0.2  # five per second between both
    worker_a.pause("klaviyo:events", 30)
    assert 25 < worker_b.take("klaviyo:events") <= 30
    worker_b.pause("klaviyo:events", 5)  # a shorter pause never cuts a longer one
    assert worker_a.take("klaviyo:events") > 25
    client.close()


def test_pause_in_process():
    limiter = Limiter()
    limiter.pause("hubspot:api", 10)
    assert 9 < limiter.take("hubspot:api") <= 10

"""Sliding windows: documented limits, shared across processes through Redis, paused by a 429."""
from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib

from connectors.base import Connector, Held, Outgoing, Reply, Sent
from connectors.ratelimit import ARRIVAL_MARGIN_S, LIMITS, Limiter, Rate
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


def test_burst_then_wait_for_the_first_call_to_leave_the_window_and_a_margin():
    # ActiveCampaign counts a call as it arrives: the sixth waits a little longer than one
    # second after the first, so that it reaches the tool a second after the first did.
    limiter = Limiter()
    assert [limiter.take("activecampaign:api") for _ in range(5)] == [0.0] * 5
    assert 1.0 < limiter.take("activecampaign:api") <= 1.0 + ARRIVAL_MARGIN_S


def _calls_in_one_span(limiter: Limiter, rate: Rate, seconds: float) -> list[float]:
    """When each call the limiter allowed went out, calling as fast as it allows for `seconds`."""
    sent, start = [], time.monotonic()
    while time.monotonic() - start < seconds:
        wait = limiter.take("k", (rate,))
        if wait > 0:
            time.sleep(min(wait, 0.01))
        else:
            sent.append(time.monotonic())
    return sent


def _most_in_a_window(times: list[float], span: float) -> int:
    """The most calls seen in any span. A call is timed when `take` has returned, up to a
    scheduling delay after the limiter counted it; callers shorten the span by that much."""
    return max(sum(1 for t in times if start <= t < start + span) for start in times)


LATE = 0.1  # the longest a busy machine may take between the limiter counting a call and its timing


def test_never_more_than_the_count_in_any_window_so_fixed_windows_never_refuse():
    """Klaviyo counts 75 a second in fixed windows: a bucket refilling while it drains would
    send 150 in the first second, and half of them would come back 429."""
    rate = Rate(10, 0.5)
    sent = _calls_in_one_span(Limiter(margin=0), rate, 1.2)
    assert _most_in_a_window(sent, rate.seconds - LATE) <= 10
    assert len(sent) >= 20  # and it does use what the tool allows


def test_steady_limit_binds_after_the_burst():
    limiter = Limiter()
    rates = (Rate(100, 1), Rate(3, 60))
    assert [limiter.take("k", rates) for _ in range(3)] == [0.0] * 3
    assert limiter.take("k", rates) > 59  # the per-minute window is full until its first call leaves it


def test_acquire_sleeps_until_a_token_or_gives_up():
    slept = []
    limiter = Limiter(sleep=lambda s: (slept.append(s), time.sleep(s)), max_wait=5, margin=0)
    fast = (Rate(1, 0.05),)
    limiter.acquire("k", fast)
    limiter.acquire("k", fast)
    assert len(slept) >= 1 and all(0 < s <= 0.05 for s in slept)
    slow = (Rate(1, 60),)
    limiter.acquire("slow", slow)
    with pytest.raises(RetryLater) as raised:  # the next token is a minute away: give the batch back
        limiter.acquire("slow", slow)
    assert raised.value.retry_after > 55


class ThreeCalls(Connector):
    """A tool called three times per delivery (as ActiveCampaign: sync, then tags)."""

    name = "three"

    def push_batch(self, items):
        def push(item):
            for _ in range(3):
                result, _ = self.call("api", lambda: None)
                if not isinstance(result, Sent):
                    return result
            return result
        return self.one_by_one(items, push)

    def reply(self, answer):
        return Reply(200, {}, None, {})


def test_a_push_starts_no_delivery_once_a_request_waited_for_the_window():
    # Four requests per 0.2 s, three per delivery: the second delivery's second request waits
    # for room. The push then yields its worker rather than sleep through every delivery.
    limiter = Limiter(limits={"three:api": (Rate(4, 0.2),)}, margin=0)
    tool = ThreeCalls(settings=None, field_map={"rate_limits": {}})
    tool.use_limiter(limiter, rate_wait=0.01)
    results = tool.push([Outgoing(i, "profile", f"k{i}", {}) for i in range(5)])
    assert [type(results[i]) for i in range(5)] == [Sent, Sent, Held, Held, Held]
    assert 0 < results[2].seconds <= 0.2
    # Held for as long as that request slept: a guess, the limiter was not asked.
    assert all(results[i].guessed for i in range(2, 5))
    # The window it slept for emptied at once: asked again, the limiter lets the next one go.
    tool.ask_again()
    assert isinstance(tool.push([Outgoing(9, "profile", "k9", {})])[9], Sent)


@pytest.mark.redis
def test_buckets_and_pauses_are_shared_through_redis(redis_server):
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushdb()
    worker_a, worker_b = Limiter(client), Limiter(client)
    taken = [w.take("activecampaign:api") for w in (worker_a, worker_b) * 3]
    assert taken[:5] == [0.0] * 5 and 1.0 < taken[5] <= 1.0 + ARRIVAL_MARGIN_S  # five per second between both
    worker_a.pause("klaviyo:events", 30)
    assert 25 < worker_b.take("klaviyo:events") <= 30
    worker_b.pause("klaviyo:events", 5)  # a shorter pause never cuts a longer one
    assert worker_a.take("klaviyo:events") > 25
    client.close()


@pytest.mark.redis
def test_workers_sharing_redis_never_send_more_than_the_count_in_any_window(redis_server):
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushdb()
    rate, sent = Rate(10, 0.5), []
    workers = [threading.Thread(target=lambda: sent.extend(_calls_in_one_span(Limiter(client), rate, 1.2)))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert _most_in_a_window(sorted(sent), rate.seconds - LATE) <= 10
    assert len(sent) >= 20
    client.close()


def test_pause_in_process():
    limiter = Limiter()
    limiter.pause("hubspot:api", 10)
    assert 9 < limiter.take("hubspot:api") <= 10

"""hub/queues.py: the running hub's Redis as `hub install` finds it, and the count of webhooks
refused for their signature, kept off the request's path."""
from __future__ import annotations

import subprocess
import time

import pytest
import redis

from hub.config import Settings
from hub.queues import EmbeddedRedis, Queues, embedded_redis_path, running_redis


def test_the_embedded_redis_of_a_running_hub_is_found_and_none_is_started_when_it_is_not(tmp_path):
    settings = Settings.from_env(env={}, overrides={"DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}"})
    assert running_redis(settings) is None
    assert not list(tmp_path.glob("hub-redis*"))  # looking started nothing
    embedded = EmbeddedRedis(embedded_redis_path(settings.DATABASE_URL))  # as `hub run` starts it
    server = subprocess.Popen(embedded.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (embedded.socket.exists() and embedded.pidfile.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = running_redis(settings)
        assert found is not None and found.set("seen", "1") and found.get("seen") == b"1"
    finally:
        server.kill()  # killed outright: its registry and pid file stay behind
        server.wait()
    try:
        assert running_redis(settings) is None
    finally:
        embedded.cleanup()


def test_refusals_counted_while_redis_is_down_are_written_once_it_answers(redis_server, tmp_path):
    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own: counts are per source
    redis.Redis.from_url(url).flushdb()
    settings = Settings.from_env(env={}, overrides={"REDIS_URL": url,
                                                    "DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}"})
    queues = Queues(settings, frozenset())
    live = queues.connection
    queues._connection = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    for _ in range(2):
        queues.note_refused("stripe", "No signatures found matching the expected signature for payload")
    time.sleep(1.5)  # the background write found Redis down and kept the counts
    queues._connection = live
    deadline = time.monotonic() + 30
    while not queues.refused(["stripe"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queues.refused(["stripe", "shopify"]) == {"stripe": {
        "count": 2, "reason": "No signatures found matching the expected signature for payload",
        "at": pytest.approx(time.time(), abs=10)}}
    # Hours older than the window are not counted.
    assert queues.refused(["stripe"], now=time.time() + 25 * 3600) == {}

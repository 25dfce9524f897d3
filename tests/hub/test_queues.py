"""The Redis of a running hub, as `hub install` looks for it: found while it runs, never started."""
from __future__ import annotations

import subprocess
import time

from hub.config import Settings
from hub.queues import EmbeddedRedis, embedded_redis_path, running_redis


def test_the_embedded_redis_of_a_running_hub_is_found_and_none_is_started_when_it_is_not(tmp_path):
    settings = Settings.from_env(env={}, overrides={"DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}"})
    assert running_redis(settings) is None
    assert not list(tmp_path.glob("hub-redis*"))  # looking started nothing
    embedded = EmbeddedRedis(embedded_redis_path(settings.DATABASE_URL))  # as `hub run` starts it
    server = subprocess.Popen(embedded.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not embedded.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = running_redis(settings)
        assert found is not None and found.set("seen", "1") and found.get("seen") == b"1"
    finally:
        server.kill()  # killed outright: its registry stays behind, naming a dead socket
        server.wait()
    try:
        assert running_redis(settings) is None
    finally:
        embedded.cleanup()

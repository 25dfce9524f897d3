"""The Recharge client shares its token's leaky bucket with the store's other apps: a 429
waits as long as Recharge asks, else until the bucket has leaked room, then goes on."""
from __future__ import annotations

import pytest

from hub.config import Settings
from standins.recharge import BUCKET_SIZE, FakeRecharge
from webhooks.recharge import api

TOKEN = "rc_api_token"


def client(rc: FakeRecharge) -> api.Client:
    return api.Client(Settings.from_env(env={}, overrides={"RECHARGE_API_KEY": TOKEN, "RECHARGE_API_BASE": rc.url}))


def test_a_bucket_filled_by_other_apps_is_waited_out_by_its_leak_time():
    with FakeRecharge(token=TOKEN) as rc:
        rc.customers = [{"id": 1, "updated_at": "2022-03-09T02:36:35"}]
        rc.spend(BUCKET_SIZE)
        rc_client = client(rc)
        answer = rc_client.call("GET", "customers")
        statuses = [c.status for c in rc.calls]
    assert [c["id"] for c in answer["customers"]] == [1]
    assert statuses[0] == 429 and statuses[-1] == 200
    # It waited for the leak (one call every half second), not a fixed back-off.
    assert rc_client.pacer.waited >= 0.5 * (len(statuses) - 1) - 0.05


def test_retry_after_when_recharge_gives_one_and_a_refusal_names_the_status():
    with FakeRecharge(token=TOKEN) as rc:
        rc.fail(429, retry_after=1.5, times=1, path="/customers")
        rc_client = client(rc)
        rc_client.call("GET", "customers")
        assert rc_client.pacer.waited >= 1.45
        rc.token = "rotated"
        with pytest.raises(api.RechargeAPIError) as refused:
            rc_client.call("GET", "customers")
    assert refused.value.status == 401


def test_leak_wait_reads_how_full_the_bucket_is():
    assert api.leak_wait({"X-Recharge-Limit": "40/40"}) == 0.5
    assert api.leak_wait({"X-Recharge-Limit": "43/40"}) == 2.0
    assert api.leak_wait({}) == 0.5

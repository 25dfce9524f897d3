"""`hub backfill --source recharge` against the Recharge stand-in: cursor pages, the leaky
bucket's 429 waited out, resume after an interruption, and the command line end to end."""
from __future__ import annotations

import copy
import io
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from hub import cli
from hub.models import InboxEvent, Payment, Subscriber, Subscription
from hub.ops import backfill, reconcile
from standins.recharge import FakeRecharge
from tests.samples import load_sample

TOKEN = "rc_backfill_token"


def count(hub, model) -> int:
    with hub.storage.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def recharge_world(rc: FakeRecharge, customers: int, subscribed: int) -> None:
    """`customers` customers from Recharge's published customer object, the first `subscribed`
    of them with a subscription (Recharge's subscription object) and a paid charge, on a day
    a few weeks after those were paid (inside Recharge's 90-day lookback for charges)."""
    rc.now = datetime(2022, 5, 1, tzinfo=timezone.utc)
    customer = load_sample("shared:recharge/customer.json")["customer"]
    sub = load_sample("shared:recharge/subscription.json")["subscription"]
    charge = load_sample("recharge/charge_paid.json")["charge"]
    rc.customers = [dict(copy.deepcopy(customer), id=5000 + i, email=f"rc{i}@example.com",
                         hash=f"hash{i}", updated_at=f"2022-03-09T02:{i // 60:02d}:{i % 60:02d}")
                    for i in range(customers)]
    rc.subscriptions = [dict(copy.deepcopy(sub), id=9000 + i, customer_id=5000 + i,
                             updated_at=f"2022-03-10T12:{i // 60:02d}:{i % 60:02d}+00:00") for i in range(subscribed)]
    rc.charges = [dict(copy.deepcopy(charge), id=7000 + i,
                       customer=dict(charge["customer"], id=5000 + i, email=f"rc{i}@example.com"),
                       line_items=[dict(charge["line_items"][0], purchase_item_id=9000 + i)],
                       updated_at=f"2022-04-09T04:{i // 60:02d}:{i % 60:02d}+00:00") for i in range(subscribed)]


def with_recharge(hub, rc: FakeRecharge):
    hub.settings = replace(hub.settings, RECHARGE_API_KEY=TOKEN, RECHARGE_API_BASE=rc.url)
    return hub


def backfill_command(hub, rc: FakeRecharge, monkeypatch):
    """`hub backfill --source recharge` with the hub's database and Redis and the stand-in."""
    for key, value in {"DATABASE_URL": hub.settings.DATABASE_URL, "REDIS_URL": hub.settings.REDIS_URL,
                       "RECHARGE_API_KEY": TOKEN, "RECHARGE_API_BASE": rc.url}.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(cli.main, ["backfill", "--source", "recharge"])


def quiet() -> backfill.Progress:
    return backfill.Progress(out=io.StringIO())


def test_backfill_pages_by_cursor_waits_out_a_full_bucket_and_stores_each_subscriber(hub):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=600, subscribed=30)
        rc.fail(429, times=1, path="/customers", body={"errors": "Too many requests"})
        with_recharge(hub, rc)
        report = backfill.run(hub, "recharge", progress=quiet())
        customer_calls = [c for c in rc.calls if c.path == "/customers"]
    assert [c.status for c in customer_calls] == [429, 200, 200, 200]
    # Every call names the version; pages after the first send only their cursor and limit.
    assert {c.headers.get("X-Recharge-Version") for c in rc.calls} == {"2021-11"}
    assert set(customer_calls[-1].query) == {"cursor", "limit"}
    assert report.counts == {"customers": 600, "subscriptions": 30, "charges": 30}
    assert count(hub, Subscriber) == 600 and count(hub, Subscription) == 30 and count(hub, Payment) == 30
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber).where(Subscriber.recharge_customer_id == "5007"))
        assert person.email == "rc7@example.com"
        [sub] = s.scalars(select(Subscription).where(Subscription.subscriber_id == person.id))
        assert (sub.source, sub.source_id, sub.status) == ("recharge", "9007", "active")
        [paid] = s.scalars(select(Payment).where(Payment.source_id == "7007"))
        assert paid.status == "succeeded"


def test_an_interrupted_backfill_resumes_from_its_cursor_and_stores_nothing_twice(hub):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=600, subscribed=0)
        with_recharge(hub, rc)
        with pytest.raises(backfill.Interrupted):
            backfill.run(hub, "recharge", progress=quiet(), stop_after_pages=2)
        assert count(hub, Subscriber) == 500
        report = backfill.run(hub, "recharge", progress=quiet())
    assert report.resumed and report.finished and report.counts["customers"] == 600
    assert count(hub, Subscriber) == 600 and count(hub, InboxEvent) == 600


def test_reconciliation_stores_what_changed_since_its_lookback_and_skips_the_rest(hub):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=3, subscribed=2)
        now = datetime.now(timezone.utc)
        rc.subscriptions[1]["updated_at"] = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        with_recharge(hub, rc)
        report = reconcile.run(hub, now=now)
        asked = [c.query for c in rc.calls if c.path == "/subscriptions"]
    assert asked and all("updated_at_min" in q for q in asked)
    [one] = report.sources
    assert (one.source, one.stored, one.error) == ("recharge", 1, None)
    with hub.storage.session() as s:
        assert list(s.scalars(select(Subscription.source_id))) == ["9001"]


def test_the_command_backfills_recharge_to_stored_subscribers(hub, monkeypatch):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=12, subscribed=4)
        result = backfill_command(hub, rc, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "recharge: 12 customers, 4 subscriptions, 4 charges; 20 new inbox rows" in result.output
    with hub.storage.session() as s:
        emails = set(s.scalars(select(Subscriber.email).where(Subscriber.recharge_customer_id.is_not(None))))
    assert emails == {f"rc{i}@example.com" for i in range(12)}


def test_paid_charges_older_than_recharge_s_lookback_are_not_listed_and_the_command_says_so(hub, monkeypatch):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=3, subscribed=3)
        rc.now = datetime(2022, 4, 9, tzinfo=timezone.utc) + timedelta(days=100)  # 100 days after they were paid
        rc.charges[2].update(status="error", retry_date="2022-04-12T04:00:00+00:00")  # failed: still listed
        result = backfill_command(hub, rc, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "recharge: 3 customers, 3 subscriptions, 1 charges;" in result.output
    assert "Recharge lists paid and refunded charges of the last 90 days only" in result.output
    with hub.storage.session() as s:
        assert dict(s.execute(select(Payment.source_id, Payment.status)).all()) == {"7002": "failed"}


def test_a_refunded_charge_is_stored_as_paid_then_refunded_and_skipped_charges_not_at_all(hub):
    with FakeRecharge(token=TOKEN) as rc:
        recharge_world(rc, customers=3, subscribed=3)
        rc.charges[0]["status"] = "refunded"
        rc.charges[0]["total_refunds"] = rc.charges[0]["total_price"]
        rc.charges[1].update(status="error", retry_date=None, charge_attempts=5)
        rc.charges[2]["status"] = "skipped"
        with_recharge(hub, rc)
        backfill.run(hub, "recharge", progress=quiet())
    with hub.storage.session() as s:
        topics = sorted(s.scalars(select(InboxEvent.topic).where(InboxEvent.topic.like("charge/%"))))
        payments = dict(s.execute(select(Payment.source_id, Payment.status)).all())
    assert topics == ["charge/max_retries_reached", "charge/paid", "charge/refunded"]
    assert payments["7000"] == "succeeded" and "7002" not in payments
    assert payments["7001"] == "retries_exhausted"  # no retry_date: Recharge tries no more

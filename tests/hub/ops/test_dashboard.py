"""Dashboard figures: pure functions over rows, and the MRR ledger fed by real webhooks."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from hub.db.unit import UnitOfWork
from hub.models import Checkpoint, InboxEvent, Subscriber
from hub.ops import dashboard
from hub.sync import outbox
from hub.sync.inbox import drain_inbox
from tests.hub.web.conftest import add_staff, log_in
from tests.hub.web.shop import Shop, days_ago
from tests.samples import API_HEADERS

NOW = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)


def test_stage_series_walks_moves_back_from_todays_stage():
    days = [date(2026, 6, d) for d in range(10, 16)]
    # Two people: one in `engaged` since before the window; one first seen on the 12th as
    # `new`, moved to `at_risk` on the 14th (their stage today).
    base = [("engaged", "2026-05-01", 1), ("at_risk", "2026-06-12", 1)]
    movers = {2: (date(2026, 6, 12), "at_risk", [(date(2026, 6, 14), "new", "at_risk")])}
    series = dashboard.stage_series(days, base, movers)
    assert series["engaged"] == [1, 1, 1, 1, 1, 1]
    assert series["new"] == [0, 0, 1, 1, 0, 0]
    assert series["at_risk"] == [0, 0, 0, 0, 1, 1]
    assert series["churned"] == [0] * 6


def test_monthly_price_matches_the_profile_mrr_rule():
    for amount, interval, count in ((2900, "month", 1), (29900, "year", 1), (4998, "week", 4), (100, "day", 1)):
        sub = SimpleNamespace(amount=amount, interval=interval, interval_count=count)
        assert dashboard.monthly(amount, interval, count) == outbox.monthly_amount(sub)


def entry(month_day: str, *changes, stale=False):
    return {"occurred_at": f"2026-{month_day}T10:00:00+00:00", "stale": stale, "subscriber_id": 1,
            "changed": [{"what": "subscription Basic", "field": f, "from": a, "to": b} for f, a, b in changes]}


HELD = [{"plan": "Basic", "source_id": "sub_1", "status": "active", "amount": 2900, "interval": "month",
         "interval_count": 1, "currency": "USD"}]


@pytest.mark.parametrize("changes, expected", [
    ([("created", None, "active"), ("amount", None, 2900), ("currency", None, "USD"), ("interval", None, "month")],
     [("2026-03", "USD", "new", 2900)]),
    ([("created", None, "trialing"), ("amount", None, 2900)], []),  # a trial brings no revenue yet
    ([("status", "trialing", "active")], [("2026-03", "USD", "new", 2900)]),
    ([("amount", 2900, 4900)], [("2026-03", "USD", "expansion", 2000)]),
    ([("amount", 4900, 2900)], [("2026-03", "USD", "contraction", -2000)]),
    ([("status", "active", "canceled")], [("2026-03", "USD", "churn", -2900)]),
    ([("status", "active", "past_due")], []),  # still owed, still counted
    ([("next_renewal_at", "a", "b")], []),
])
def test_each_change_of_a_subscription_is_booked_as_one_movement(changes, expected):
    assert dashboard.mrr_moves(entry("03-10", *changes), HELD) == expected


def test_stale_entries_move_nothing():
    assert dashboard.mrr_moves(entry("03-10", ("amount", 2900, 4900), stale=True), HELD) == []


def test_mrr_series_and_churn_rate_from_booked_months():
    months = {}
    dashboard.book(months, [("2026-01", "USD", "new", 2900), ("2026-01", "USD", "new", 2900),
                            ("2026-02", "USD", "expansion", 2000), ("2026-03", "USD", "churn", -2900),
                            ("2026-03", "EUR", "new", 1000)])
    series = dashboard.mrr_series(months, ["2026-02", "2026-03", "2026-04"], "USD")
    assert series["mrr"] == [7800, 4900, 4900]
    assert series["expansion"] == [2000, 0, 0] and series["churn"] == [0, -2900, 0]
    assert series["paying_at_start"] == [2, 2, 1]
    assert series["churn_rate"] == [0.0, 50.0, 0.0]
    assert dashboard.main_currency(months) == "USD"


def test_revenue_churn_and_net_revenue_retention_of_the_mrr_held_at_each_months_start():
    months = {}
    dashboard.book(months, [("2026-01", "USD", "new", 10000), ("2026-01", "USD", "new", 10000),
                            ("2026-02", "USD", "expansion", 5000), ("2026-02", "USD", "contraction", -2000),
                            ("2026-02", "USD", "churn", -10000), ("2026-02", "USD", "new", 50000)])
    series = dashboard.mrr_series(months, ["2026-01", "2026-02", "2026-03"], "USD")
    # February starts at 200.00: 120.00 of it lost (churn and a downgrade), 50.00 gained by
    # the same customers; a new customer's 500.00 is growth, not retention.
    assert series["revenue_churn"] == [None, 60.0, 0.0]
    assert series["net_retention"] == [None, 65.0, 100.0]


def test_recovered_revenue_is_the_money_of_failed_payments_paid_later_by_month_paid():
    rows = [(datetime(2026, 5, 3, tzinfo=timezone.utc), 2900, "usd"),
            (datetime(2026, 5, 20, tzinfo=timezone.utc), 1500, "USD"),
            (datetime(2026, 6, 1, tzinfo=timezone.utc), 4000, "usd"),
            (datetime(2026, 6, 2, tzinfo=timezone.utc), 9900, "eur")]  # another currency: not converted
    assert dashboard.recovered_revenue(rows, ["2026-05", "2026-06"], "USD") == [4400, 4000]


def test_the_dashboard_shows_recovered_revenue_beside_the_mrr(client, hub):
    shop = Shop(client)
    shop.customer("cus_late", "late@example.com", "Pat Late", at=days_ago(40))
    shop.subscribe("cus_late", "sub_late", at=days_ago(40))
    shop.invoice("cus_late", "sub_late", "in_late", at=days_ago(10), paid=False, amount=2900)
    shop.invoice("cus_late", "sub_late", "in_late", at=days_ago(8), paid=True, amount=2900, attempt=2)
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        mrr = dashboard.build(s, hub.storage, hub.settings, hub.queues)["mrr"]
    assert sum(mrr["recovered"]) == 29.0
    add_staff(hub, "victor@shop.test")
    log_in(client, "victor@shop.test")
    page = client.get("/sync-log/dashboard").get_data(as_text=True)
    assert "Net revenue retention" in page and "29.00" in page


def test_recovery_counts_payments_paid_within_the_window():
    failed = datetime(2026, 5, 1, tzinfo=timezone.utc)
    rows = [(failed, failed + timedelta(days=5), "succeeded"),  # recovered
            (failed, failed + timedelta(days=30), "succeeded"),  # paid, but too late
            (failed, None, "failed"),  # lost
            (NOW - timedelta(days=3), None, "failed")]  # still inside its window: not decided yet
    figure = dashboard.recovery_by_month(rows, ["2026-05", "2026-06"], NOW, 21)
    assert figure["failed"] == [3, 1] and figure["recovered"] == [1, 0] and figure["open"] == [0, 1]
    assert figure["rate"] == [33.3, None]


def test_cohort_retention_counts_who_still_subscribes_at_each_month_end():
    start = datetime(2026, 4, 3, tzinfo=timezone.utc)
    rows = [(1, start, None), (2, start, datetime(2026, 5, 20, tzinfo=timezone.utc)),
            (3, datetime(2026, 5, 2, tzinfo=timezone.utc), None)]
    table = dashboard.cohort_table(rows, NOW, months=4)
    assert table["rows"] == [{"cohort": "2026-04", "size": 2, "retention": [100, 50, 50]},
                             {"cohort": "2026-05", "size": 1, "retention": [100, 100]}]


def test_error_rates_per_connector_and_day():
    days = [date(2026, 6, 14), date(2026, 6, 15)]
    at = datetime(2026, 6, 15, 9, tzinfo=timezone.utc)
    rows = [(at, "klaviyo", "sent"), (at, "klaviyo", "retry"), (at, "hubspot", "sent"),
            (at - timedelta(days=30), "klaviyo", "failed")]  # outside the window
    figure = dashboard.error_rates(rows, days)
    assert figure["series"] == {"hubspot": [None, 0.0], "klaviyo": [None, 50.0]}
    assert figure["attempts"] == {"hubspot": 1, "klaviyo": 2}


def test_reminders_by_type_and_month():
    figure = dashboard.reminders_by_month([("Renewal Reminder", "2026-05", 3), ("Stage Changed", "2026-05", 9),
                                           ("Payment Failed", "2026-06", 1)], ["2026-05", "2026-06"])
    assert figure["series"] == {"Renewal Reminder": [3, 0], "Payment Failed": [0, 1]}


def test_the_ledger_books_webhooks_once_and_failed_rows_after_their_replay(client, hub):
    shop = Shop(client)
    shop.customer("cus_a", "a@example.com", "Ann A", at=days_ago(70))
    shop.subscribe("cus_a", "sub_a", at=days_ago(70), amount=2900)
    shop.customer("cus_b", "b@example.com", "Ben B", at=days_ago(40))
    shop.subscribe("cus_b", "sub_b", at=days_ago(40), amount=1900)
    shop.change_plan("cus_a", "sub_a", at=days_ago(20), amount=4900, plan="Plus")
    drain_inbox(hub.storage, hub.settings)
    ledger = dashboard.refresh_ledger(hub.storage)
    total = sum(v for cells in ledger["months"].values() for k, v in cells["USD"].items() if not k.endswith("count"))
    assert total == 4900 + 1900
    assert dashboard.refresh_ledger(hub.storage)["months"] == ledger["months"]  # read once, booked once

    # A cancellation whose processing fails is booked only once a replay processes it.
    shop.cancel("cus_b", "sub_b", at=days_ago(2))
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent).order_by(InboxEvent.id.desc()))
        row.status, row.error = "failed", "simulated outage"
    ledger = dashboard.refresh_ledger(hub.storage)
    assert ledger["failed"] == [row.id]
    from hub.sync.inbox import replay

    with hub.storage.session() as s:
        replay(UnitOfWork(s), s.get(InboxEvent, row.id), hub.settings)
    ledger = dashboard.refresh_ledger(hub.storage)
    assert ledger["failed"] == []
    month = dashboard.month_key(days_ago(2))
    assert ledger["months"][month]["USD"]["churn"] == -1900

    with hub.storage.session() as s:
        data = dashboard.build(s, hub.storage, hub.settings, hub.queues)
    assert data["mrr"]["current"] == "49.00 USD"
    assert data["ledger"]["counted_to"] == data["ledger"]["latest"]


def test_a_ledger_step_is_dropped_when_another_process_moved_it_first(client, hub):
    shop = Shop(client)
    shop.customer("cus_a", "a@example.com", "Ann A", at=days_ago(10))
    shop.subscribe("cus_a", "sub_a", at=days_ago(10), amount=2900)
    drain_inbox(hub.storage, hub.settings)
    dashboard.refresh_ledger(hub.storage, max_rows=1)
    with hub.storage.session() as s:
        held = s.get(Checkpoint, dashboard.LEDGER)
        stale_stamp = held.updated_at
        assert dashboard._save(s, {"last_id": 99}, stale_stamp - timedelta(seconds=1), exists=True) is False


def test_mrr_counts_only_collected_money_each_item_by_its_own_interval(client, hub):
    shop = Shop(client)
    for name in ("paying", "unpaid", "incomplete", "mixed", "paused"):
        shop.customer(f"cus_{name}", f"{name}@example.com", f"Pat {name}", at=days_ago(50))
    shop.subscribe("cus_paying", "sub_paying", at=days_ago(50), amount=2900)
    # Stripe collects nothing from these: retries exhausted, or the first payment never made.
    shop.subscribe("cus_unpaid", "sub_unpaid", at=days_ago(50), amount=1900, status="unpaid")
    shop.subscribe("cus_incomplete", "sub_incomplete", at=days_ago(50), amount=1500, status="incomplete")
    # 10.00 a month plus 120.00 a year on one subscription: 20.00 a month.
    shop.subscribe("cus_mixed", "sub_mixed", at=days_ago(50), amount=1000, more_items=((12000, "year"),))
    shop.subscribe("cus_paused", "sub_paused", at=days_ago(50), amount=4900)
    resumes = days_ago(-25).replace(microsecond=0)
    shop.pause("cus_paused", "sub_paused", at=days_ago(5), resumes_at=resumes)
    drain_inbox(hub.storage, hub.settings)

    with hub.storage.session() as s:
        data = dashboard.build(s, hub.storage, hub.settings, hub.queues)
        # The MRR each person's profile carries to the email and CRM tools.
        mrr = {x.email.split("@")[0]: outbox.profile_fields(x)["mrr"] for x in s.scalars(select(Subscriber))}
    assert data["mrr"]["current"] == "49.00 USD"
    assert mrr == {"paying": 2900, "unpaid": 0, "incomplete": 0, "mixed": 2000, "paused": 0}
    profiles = {name: client.get(f"/api/subscribers/{name}@example.com",
                                  headers=API_HEADERS).get_json()["subscriber"]
                for name in ("unpaid", "incomplete", "mixed", "paused")}
    assert profiles["mixed"]["subscriptions"][0]["amount"] == 2000
    paused = profiles["paused"]["subscriptions"][0]
    assert paused["status"] == "paused"
    assert paused["resumes_at"] == resumes.isoformat()
    # Its next renewal is the first one Stripe collects again, at or after the resume.
    assert datetime.fromisoformat(paused["next_renewal_at"]) >= resumes
    assert [p["subscriptions"][0]["status"] for p in profiles.values()] == ["paused", "incomplete", "active", "paused"]
    add_staff(hub, "victor@shop.test")
    log_in(client, "victor@shop.test")
    page = client.get(f"/sync-log/subscribers/{profiles['paused']['id']}").get_data(as_text=True)
    assert '<span class="badge paused">paused</span>' in page
    assert f'resumes {resumes.day} {resumes.strftime("%b %Y, %H:%M")} UTC' in page  # "1 Jan 2027, 00:01 UTC"
    page = client.get(f"/sync-log/subscribers/{profiles['incomplete']['id']}").get_data(as_text=True)
    assert '<span class="badge incomplete">awaiting its first payment</span>' in page


def test_churn_by_type_counts_cancellations_per_month():
    keys = ["2026-05", "2026-06"]
    rows = [("2026-05-03", {"churn_type": "involuntary"}), ("2026-06-01", {"churn_type": "voluntary"}),
            ("2026-06-20", {}), ("2026-04-30", {"churn_type": "involuntary"})]
    assert dashboard.churn_by_type(rows, keys) == {"voluntary": [0, 2], "involuntary": [1, 0]}


def test_churn_is_split_into_voluntary_and_involuntary(client, hub):
    shop = Shop(client)
    for name in ("leaves", "lapses"):
        shop.customer(f"cus_{name}", f"{name}@example.com", f"Pat {name}", at=days_ago(50))
        shop.subscribe(f"cus_{name}", f"sub_{name}", at=days_ago(50))
    shop.invoice("cus_lapses", "sub_lapses", "in_lapses", at=days_ago(20), paid=False)
    shop.cancel("cus_lapses", "sub_lapses", at=days_ago(2))   # ended owing the failed invoice
    shop.cancel("cus_leaves", "sub_leaves", at=days_ago(2))
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        churn = dashboard.build(s, hub.storage, hub.settings, hub.queues)["churn"]
    assert (sum(churn["voluntary"]), sum(churn["involuntary"])) == (1, 1)
    add_staff(hub, "victor@shop.test")
    log_in(client, "victor@shop.test")
    assert "involuntary (failed payment)" in client.get("/sync-log/dashboard").get_data(as_text=True)

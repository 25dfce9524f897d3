"""`hub backfill` against loopback stand-ins of Stripe, Shopify and Chargebee: the same inbox,
normalizers and model as webhooks, history that emails no one, resume after a crash."""
from __future__ import annotations

import copy
import io
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from hub import cli, jobs
from hub.models import Checkpoint, Delivery, InboxEvent, Payment, Subscriber, Subscription, Trigger
from hub.ops import backfill
from standins.chargebee import FakeChargebee
from standins.shopify import FakeShopifyAdmin, contract_node
from standins.stripe import FakeStripe
from tests.samples import load_sample, stripe_resource, stripe_schedule
from webhooks.chargebee import backfill as chargebee_listing

STRIPE_KEY = "sk_test_backfill"


def count(hub, model) -> int:
    with hub.storage.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def stripe_world(fake: FakeStripe, customers: int, with_subscription: int) -> None:
    """`customers` customers from Stripe's example object, the first `with_subscription` of
    them subscribed (Stripe's own subscription sample), newest first as Stripe lists them."""
    base = stripe_resource("customer")
    sub = load_sample("shared:stripe/pay/subscription.created.json")["object"]
    people = [dict(copy.deepcopy(base), id=f"cus_{i:06d}", email=f"person{i}@example.com",
                   name=f"Person {i}", created=1_700_000_000 + i) for i in range(customers)]
    fake.customers = people[::-1]
    fake.subscriptions = [dict(copy.deepcopy(sub), id=f"sub_{i:06d}", customer=f"cus_{i:06d}",
                               created=1_700_000_100 + i) for i in range(with_subscription)][::-1]


@pytest.fixture
def stripe_api():
    with FakeStripe(key=STRIPE_KEY) as fake:
        yield fake


def with_stripe(hub, fake):
    hub.settings = replace(hub.settings, STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=fake.url)
    return hub


def quiet() -> backfill.Progress:
    return backfill.Progress(out=io.StringIO())


def test_stripe_backfill_interrupted_half_way_and_resumed_gives_each_subscriber_once(hub, stripe_api):
    stripe_world(stripe_api, customers=450, with_subscription=250)
    with_stripe(hub, stripe_api)
    with pytest.raises(backfill.Interrupted):
        backfill.run(hub, "stripe", progress=quiet(), stop_after_pages=3)  # 300 of 450 customers
    assert count(hub, Subscriber) == 300
    report = backfill.run(hub, "stripe", progress=quiet())
    assert report.resumed and report.finished
    assert report.counts == {"customers": 450, "subscriptions": 250, "invoices": 0}
    assert count(hub, Subscriber) == 450
    assert count(hub, Subscription) == 250
    assert count(hub, InboxEvent) == 450 + 250  # one row per object: nothing stored twice
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.origin == "backfill")) == 700
        assert set(s.scalars(select(InboxEvent.status))) == {"processed"}
        jenny = s.scalar(select(Subscriber).where(Subscriber.stripe_customer_id == "cus_000007"))
        assert jenny.email == "person7@example.com"
        [sub] = s.scalars(select(Subscription).where(Subscription.subscriber_id == jenny.id))
        assert sub.source_id == "sub_000007" and sub.status == "active"


def test_second_backfill_after_the_end_stores_nothing_and_restart_stores_only_changes(hub, stripe_api):
    stripe_world(stripe_api, customers=120, with_subscription=30)
    with_stripe(hub, stripe_api)
    backfill.run(hub, "stripe", progress=quiet())
    again = backfill.run(hub, "stripe", progress=quiet())
    assert again.finished and again.stored == 0 and again.pages == 4  # nothing to resume
    stripe_api.customers[0] = {**stripe_api.customers[0], "email": "moved@example.com"}
    restarted = backfill.run(hub, "stripe", progress=quiet(), restart=True)
    assert restarted.stored == 1  # only the changed customer
    assert count(hub, Subscriber) == 120
    with hub.storage.session() as s:
        moved = s.scalar(select(Subscriber).where(Subscriber.stripe_customer_id == "cus_000119"))
        assert moved.email == "moved@example.com"


def test_history_fires_no_reminder_and_starts_no_flow(hub, stripe_api):
    """A failed invoice from last year and a subscription from 2016: no Payment Failed, no
    Subscription Started, no event delivery to any tool; the profile is still planned."""
    stripe_world(stripe_api, customers=1, with_subscription=1)
    invoice = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    stripe_api.invoices = [dict(invoice, customer="cus_000000", parent={
        "subscription_details": {"subscription": "sub_000000"}, "type": "subscription_details"})]
    hub.settings = replace(hub.settings, KLAVIYO_API_KEY="pk_test", KLAVIYO_BASE_URL="http://127.0.0.1:9")
    with_stripe(hub, stripe_api)
    backfill.run(hub, "stripe", progress=quiet())
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        statuses = dict(s.execute(select(Trigger.name, Trigger.status)).all())
        assert statuses.get("Payment Failed") == "skipped"
        assert "fired" not in statuses.values()
        kinds = set(s.scalars(select(Delivery.kind)))
    assert "event" not in kinds
    assert "profile" in kinds
    # The next sweep looks at today: the 2016-2025 renewals and retries stay in the past.
    jobs.run_time_rules(hub, datetime.now(timezone.utc))
    with hub.storage.session() as s:
        fired = s.scalars(select(Trigger).where(Trigger.status == "fired")).all()
        assert [t.name for t in fired if t.due_at and t.due_at < datetime.now(timezone.utc) - timedelta(days=1)] == []


def test_a_backfilled_stripe_subscription_under_a_schedule_renews_at_its_next_phases_price(hub, stripe_api):
    """Listed whole, a subscription a schedule runs is read with its schedule: its renewal
    falls in the schedule's next phase (2 × 40.00)."""
    stripe_world(stripe_api, customers=1, with_subscription=1)
    renews = int((datetime.now(timezone.utc) + timedelta(days=20)).timestamp())
    sub = stripe_api.subscriptions[0]
    sub.update(status="active", schedule="sub_sched_1", cancel_at_period_end=False, cancel_at=None,
               pause_collection=None)
    sub.pop("current_period_end", None)  # on the items since API 2025-03-31
    sub["items"]["data"][0]["current_period_end"] = renews
    stripe_api.subscription_schedules["sub_sched_1"] = stripe_schedule(
        "sub_000000", "cus_000000", [(renews - 30 * 86400, renews, "price_now", []),
                                     (renews, renews + 30 * 86400, "price_plus", [])], quantity=2, id="sub_sched_1")
    stripe_api.prices = {"price_plus": {"id": "price_plus", "object": "price", "unit_amount": 4000,
                                        "currency": "usd"}}
    backfill.run(with_stripe(hub, stripe_api), "stripe", progress=quiet())
    with hub.storage.session() as s:
        held = s.scalar(select(Subscription).where(Subscription.source_id == "sub_000000"))
        assert (held.renewal_amount, held.renewal_amount_at) == (8000, held.next_renewal_at)


def test_stripe_rate_limit_429_is_waited_out(hub, stripe_api):
    stripe_world(stripe_api, customers=150, with_subscription=0)
    stripe_api.fail(429, times=2, path="/v1/customers")
    with_stripe(hub, stripe_api)
    report = backfill.run(hub, "stripe", progress=quiet())
    assert report.finished and count(hub, Subscriber) == 150
    assert [c.status for c in stripe_api.calls if c.path == "/v1/customers"][:3] == [429, 429, 200]


# --- Shopify ---------------------------------------------------------------------------------

def days_ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def shopify_world(admin: FakeShopifyAdmin, customers: int, order_age_days: int = 10) -> None:
    admin.listed["customers"] = [{
        "id": f"gid://shopify/Customer/{i}", "legacyResourceId": str(i), "email": f"Buyer{i}@Example.com",
        "firstName": "Buyer", "lastName": str(i), "phone": None, "createdAt": "2025-01-05T10:00:00Z",
        "updatedAt": f"2026-10-{1 + i % 28:02d}T10:00:00Z",
        "emailMarketingConsent": {"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                                  "consentUpdatedAt": "2025-01-05T10:00:00Z"},
        "smsMarketingConsent": None} for i in range(1, customers + 1)]
    admin.listed["subscriptionContracts"] = [contract_node(
        f"gid://shopify/SubscriptionContract/{500 + i}", updatedAt="2026-10-20T09:00:00Z",
        customer={"id": f"gid://shopify/Customer/{i}", "email": f"buyer{i}@example.com", "firstName": "Buyer",
                  "lastName": str(i), "phone": None}) for i in range(1, 31)]
    admin.listed["orders"] = [{
        "id": "gid://shopify/Order/9001", "legacyResourceId": "9001", "name": "#1001",
        "email": "buyer1@example.com", "createdAt": days_ago(order_age_days), "processedAt": days_ago(order_age_days),
        "updatedAt": days_ago(order_age_days), "cancelledAt": None, "displayFinancialStatus": "PAID",
        "currencyCode": "CAD", "sourceName": "subscription_contract_checkout_one",
        "totalPriceSet": {"shopMoney": {"amount": "49.98", "currencyCode": "CAD"}},
        "customer": {"id": "gid://shopify/Customer/1", "email": "buyer1@example.com", "firstName": "Buyer",
                     "lastName": "1", "phone": None},
        "lineItems": {"nodes": [{"title": "Example T-Shirt", "quantity": 2, "variant": {"id": "gid://shopify/ProductVariant/7"},
                                 "product": {"id": "gid://shopify/Product/8"},
                                 "originalUnitPriceSet": {"shopMoney": {"amount": "24.99"}},
                                 "sellingPlan": {"sellingPlanId": "gid://shopify/SellingPlan/1039518925",
                                                 "name": "Delivered every 4 weeks"}}]}}]


def test_shopify_backfill_pages_with_cursors_within_the_query_cost_budget(hub):
    with FakeShopifyAdmin(token="shpat_ok", owns_contracts=True) as admin:
        shopify_world(admin, customers=230)
        admin.bucket_size, admin.restore_rate = 1000.0, 2000.0  # a small bucket: the lister must pace
        hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                               SHOPIFY_ADMIN_URL=admin.url, SHOPIFY_OWNS_CONTRACTS=True)
        admin.skip("gid://shopify/SubscriptionContract/501", 1)  # buyer 1 skipped the next delivery
        out = io.StringIO()
        report = backfill.run(hub, "shopify", progress=backfill.Progress(out=out, every=0))
        listed = [r for r in admin.requests if "HubList" in r["query"]]
        assert not [r for r in admin.requests if "HubSubscriptionContract" in r["query"]]  # nothing refetched
        # Each active contract's billing cycles are listed with it, within the same budget.
        assert 30 <= len([r for r in admin.requests if "HubBillingCycles" in r["query"]]) <= 30 + admin.throttled
    assert report.counts == {"customers": 230, "subscription_contracts": 30, "orders": 1}
    # Pages of 100 customers, 25 contracts and 10 orders, and those Shopify throttled asked again.
    assert 3 + 2 + 1 <= len(listed) <= 3 + 2 + 1 + admin.throttled
    assert "shopify customers" in out.getvalue() and "230/230" in out.getvalue()
    assert count(hub, Subscriber) == 230 and count(hub, Subscription) == 30
    with hub.storage.session() as s:
        buyer = s.scalar(select(Subscriber).where(Subscriber.shopify_customer_id == "1"))
        assert buyer.email == "buyer1@example.com"
        assert buyer.consent["email"]["state"] == "subscribed"
        [sub] = s.scalars(select(Subscription).where(Subscription.subscriber_id == buyer.id))
        assert (sub.amount, sub.currency, sub.interval, sub.interval_count) == (4998, "CAD", "week", 4)
        assert buyer.orders_count == 1
        # nextBillingDate 2026-11-29 names the skipped delivery: the renewal is the cycle after it.
        assert (sub.current_period_end, sub.next_renewal_at) == (
            datetime(2026, 11, 29, 12, tzinfo=timezone.utc), datetime(2026, 12, 27, 12, tzinfo=timezone.utc))


@pytest.mark.parametrize("all_orders", [False, True])
def test_shopify_lists_orders_older_than_60_days_only_to_an_app_with_read_all_orders(hub, all_orders):
    with FakeShopifyAdmin(token="shpat_ok") as admin:
        shopify_world(admin, customers=1, order_age_days=90)
        if all_orders:
            admin.scopes.add("read_all_orders")
        hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                               SHOPIFY_ADMIN_URL=admin.url)
        report = backfill.run(hub, "shopify", progress=quiet())
    assert report.counts["orders"] == (1 if all_orders else 0)
    # Every summary says what the listing leaves out, and how to get it.
    assert "last 60 days" in report.limit and "read_all_orders" in report.limit


def test_a_shopify_order_refunded_before_the_hub_came_counts_only_what_was_kept(hub):
    """refunds/create fires for new refunds only: a backfill reads an order's own refunds."""
    with FakeShopifyAdmin(token="shpat_ok") as admin:
        shopify_world(admin, customers=1)
        [order] = admin.listed["orders"]
        order.update(displayFinancialStatus="PARTIALLY_REFUNDED", refunds=[{
            "id": "gid://shopify/Refund/77", "legacyResourceId": "77", "createdAt": days_ago(5),
            "totalRefundedSet": {"shopMoney": {"amount": "20.00", "currencyCode": "CAD"}}}])
        hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                               SHOPIFY_ADMIN_URL=admin.url)
        backfill.run(hub, "shopify", progress=quiet())
        backfill.run(hub, "shopify", progress=quiet(), restart=True)  # listed again: counted once
    with hub.storage.session() as s:
        buyer = s.scalar(select(Subscriber).where(Subscriber.shopify_customer_id == "1"))
        assert buyer.lifetime_spend == 4998 - 2000


# --- Chargebee -------------------------------------------------------------------------------

def chargebee_world(cb: FakeChargebee) -> None:
    event = load_sample("chargebee/subscription_created.json")
    customer, sub = event["content"]["customer"], event["content"]["subscription"]
    cb.customers = [dict(customer, id=f"cb_{i}", email=f"cb{i}@example.com", updated_at=1_730_000_000 + i,
                         resource_version=1_730_000_000_000 + i) for i in range(130)]
    cb.subscriptions = [{"subscription": dict(sub, id=f"cbsub_{i}", customer_id=f"cb_{i}",
                                              updated_at=1_730_000_500 + i, resource_version=1_730_000_500_000 + i),
                         "customer": dict(customer, id=f"cb_{i}", email=f"cb{i}@example.com")} for i in range(40)]


@pytest.mark.parametrize("retry_after", [0.2, None])  # Chargebee sends a Retry-After only sometimes
def test_chargebee_backfill_pages_by_offset_and_waits_out_a_429(hub, retry_after):
    with FakeChargebee(api_key="cb_key") as cb:
        chargebee_world(cb)
        cb.fail(429, retry_after=retry_after, times=1, path="/api/v2/customers")
        hub.settings = replace(hub.settings, CHARGEBEE_SITE="acme", CHARGEBEE_API_KEY="cb_key",
                               CHARGEBEE_API_BASE=cb.url, CHARGEBEE_API_RATE=6000)
        report = backfill.run(hub, "chargebee", progress=quiet())
        statuses = [c.status for c in cb.calls]
    assert statuses[:2] == [429, 200]
    assert report.counts == {"customers": 130, "subscriptions": 40, "invoices": 0}
    assert count(hub, Subscriber) == 130 and count(hub, Subscription) == 40
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber.email).where(Subscriber.chargebee_customer_id == "cb_3")) == "cb3@example.com"


def test_the_hub_takes_half_a_chargebee_sites_api_limit_leaving_the_rest_to_the_merchants_own_apps(hub):
    """The limit is the site's; a live site that goes over is flagged and may have its reads blocked."""
    for site_limit, per_minute, burst in ((150, 75, 10), (1000, 500, 10), (10, 5, 5)):
        settings = replace(hub.settings, CHARGEBEE_SITE="acme", CHARGEBEE_API_KEY="k", CHARGEBEE_API_RATE=site_limit)
        pacer = chargebee_listing.Client(settings).pacer
        assert (round(pacer.rate * 60), pacer.burst) == (per_minute, burst)


# --- the command ---------------------------------------------------------------------------------

def test_command_prints_progress_and_a_summary_then_says_when_done(hub, stripe_api, monkeypatch):
    stripe_world(stripe_api, customers=20, with_subscription=5)
    for key, value in {"DATABASE_URL": hub.settings.DATABASE_URL, "REDIS_URL": hub.settings.REDIS_URL,
                       "STRIPE_API_KEY": STRIPE_KEY, "STRIPE_API_BASE": stripe_api.url}.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    result = runner.invoke(cli.main, ["backfill", "--source", "stripe"])
    assert result.exit_code == 0, result.output
    assert "stripe customers" in result.output and "/s" in result.output
    assert "stripe: 20 customers, 5 subscriptions, 0 invoices; 25 new inbox rows" in result.output
    again = runner.invoke(cli.main, ["backfill", "--source", "stripe"])
    assert "already backfilled" in again.output
    with hub.storage.session() as s:
        assert s.get(Checkpoint, "backfill:stripe").value["finished"] is True


def test_command_without_a_configured_source_says_what_to_set(hub, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", hub.settings.DATABASE_URL)
    for key in ("STRIPE_API_KEY", "SHOPIFY_SHOP", "SHOPIFY_ACCESS_TOKEN", "CHARGEBEE_API_KEY", "CHARGEBEE_SITE"):
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(cli.main, ["backfill"])
    assert result.exit_code != 0
    assert "STRIPE_API_KEY" in result.output

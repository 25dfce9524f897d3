"""Reconciliation against loopback stand-ins: what the webhooks missed is applied once, marked
"recovered by reconciliation" on the timeline and counted on the dashboard; what the model
already holds is left alone."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from hub import cli, jobs
from hub.models import InboxEvent, Subscriber, Subscription, Trigger
from hub.ops import dashboard, reconcile
from hub.schedule import schedule
from hub.sync.inbox import drain_inbox
from standins.shopify import CONTRACT_SCOPES, FakeShopifyAdmin, contract_node
from standins.stripe import FakeStripe
from tests.hub.web.conftest import add_staff, log_in
from tests.hub.web.test_synclog import visible_text
from tests.samples import API_HEADERS, load_sample, post, stripe_chargeback, stripe_event

KEY = "sk_test_reconcile"


def customer(customer_id="cus_rec1", email="rita@example.com"):
    return {"id": customer_id, "object": "customer", "email": email, "name": "Rita Reyes",
            "created": 1_700_000_000, "phone": None}


def subscription(customer_id="cus_rec1"):
    sub = load_sample("shared:stripe/pay/subscription.created.json")["object"]
    return {**sub, "id": "sub_rec1", "customer": customer_id}


def test_stripe_event_the_webhook_missed_is_recovered_once_and_shown(app, client, hub):
    hour_ago = int(time.time()) - 3600
    delivered = stripe_event("customer.created", customer(), event_id="evt_delivered", created=hour_ago)
    missed = stripe_event("customer.subscription.created", subscription(), event_id="evt_missed",
                          created=hour_ago + 60)
    assert post(client, "stripe", delivered).status_code == 200  # the webhook that did arrive
    with FakeStripe(key=KEY) as api:
        api.events = [missed, delivered]  # newest first, as Stripe lists them
        api.customers = [customer()]
        hub.settings = replace(hub.settings, STRIPE_API_KEY=KEY, STRIPE_API_BASE=api.url)
        report = reconcile.run(hub)
        again = reconcile.run(hub)
    [stripe] = report.sources
    assert (stripe.listed, stripe.known, stripe.stored, stripe.recovered) == (2, 0, 1, 1)
    assert again.sources[0].stored == 0 and again.sources[0].recovered == 0
    with hub.storage.session() as s:
        rows = dict(s.execute(select(InboxEvent.event_id, InboxEvent.origin)).all())
        assert rows == {"evt_delivered": "webhook", "evt_missed": "reconciliation"}
        rita = s.scalar(select(Subscriber).where(Subscriber.email == "rita@example.com"))
        assert s.scalar(select(func.count()).select_from(Subscription)
                        .where(Subscription.subscriber_id == rita.id)) == 1
        # A live change, not history: the rules fire as for a webhook.
        fired = set(s.scalars(select(Trigger.name).where(Trigger.status == "fired")))
        assert "Subscription Started" in fired
    timeline = client.get("/api/subscribers/rita@example.com", headers=API_HEADERS).get_json()["timeline"]
    marks = {e["event_id"]: e["recovered"] for e in timeline if e["kind"] == "event"}
    assert marks == {"evt_missed": True, "evt_delivered": False}
    add_staff(hub, "sam@shop.test")
    staff = app.test_client()
    log_in(staff, "sam@shop.test")
    page = staff.get(f"/sync-log/subscribers/{rita.id}").get_data(as_text=True)
    assert page.count("recovered by reconciliation") == 1
    dashboard = staff.get("/sync-log/dashboard").get_data(as_text=True)
    assert '<strong id="recovered-count">1</strong>' in dashboard


def shopify_customer(i: int, updated: str, email: str | None = None) -> dict:
    return {"id": f"gid://shopify/Customer/{i}", "legacyResourceId": str(i),
            "email": email or f"shopper{i}@example.com", "firstName": "Shopper", "lastName": str(i),
            "phone": None, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": updated,
            "emailMarketingConsent": None, "smsMarketingConsent": None}


def test_shopify_changes_since_the_checkpoint_skip_what_the_model_already_holds(hub, client):
    now = datetime.now(timezone.utc)
    earlier = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with FakeShopifyAdmin(token="shpat_ok", owns_contracts=True) as admin:
        hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                               SHOPIFY_ADMIN_URL=admin.url, SHOPIFY_OWNS_CONTRACTS=True)
        admin.listed["customers"] = [shopify_customer(1, earlier), shopify_customer(2, earlier)]
        first = reconcile.run(hub, now=now - timedelta(hours=1))
        # Since then: customer 1 changed and its webhook arrived; customer 2 changed and its
        # webhook was lost; a contract was made and its webhook was lost too.
        webhook = {"id": 1, "email": "shopper1@example.com", "first_name": "Shopper", "last_name": "One",
                   "updated_at": later, "created_at": "2026-01-01T00:00:00Z"}
        assert post(client, "shopify", webhook, topic="customers/update").status_code == 200
        jobs.drain_inbox_job()
        admin.listed["customers"] = [{**shopify_customer(1, later), "lastName": "One"},
                                     shopify_customer(2, later, "new@example.com")]
        admin.listed["subscriptionContracts"] = [contract_node(
            "gid://shopify/SubscriptionContract/77", updatedAt=later,
            customer={"id": "gid://shopify/Customer/1", "email": "shopper1@example.com", "firstName": "Shopper",
                      "lastName": "One", "phone": None})]
        second = reconcile.run(hub, now=now)
        since = [r["variables"].get("query") for r in admin.requests if "customers(first" in r["query"]]
    assert first.sources[0].stored == 2
    [shop] = second.sources
    assert (shop.listed, shop.known, shop.stored, shop.recovered) == (3, 1, 2, 2)
    # The second pass asked only for what changed since the first one (less a short overlap).
    first_run = now - timedelta(hours=1) - reconcile.OVERLAP
    assert since[-1] == f"updated_at:>'{first_run:%Y-%m-%dT%H:%M:%SZ}'"
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber.email).where(Subscriber.shopify_customer_id == "2")) == "new@example.com"
        assert s.scalar(select(Subscription.status).where(Subscription.source_id == "77")) == "active"
        assert reconcile.recovered_total(s)["count"] == 4  # 2 first-seen customers, then 2 changes
        assert reconcile.recovered_total(s)["by_source"] == {"shopify": 4}


def test_reconcile_runs_on_rq_cron_and_on_demand(hub, monkeypatch):
    names = [entry[0].__name__ for entry in schedule(hub.settings)]
    assert "reconcile_job" in names
    assert [e for e in schedule(hub.settings) if e[0] is jobs.reconcile_job][0][2]["interval"] == 900
    assert "reconcile_job" not in [e[0].__name__ for e in schedule(replace(hub.settings, HUB_RECONCILE_INTERVAL=0))]
    with FakeStripe(key=KEY) as api:
        api.events = [stripe_event("customer.created", customer(), event_id="evt_job", created=int(time.time()) - 60)]
        hub.settings = replace(hub.settings, STRIPE_API_KEY=KEY, STRIPE_API_BASE=api.url)
        assert jobs.reconcile_job()["stripe"]["recovered"] == 1
        for key, value in {"DATABASE_URL": hub.settings.DATABASE_URL, "REDIS_URL": hub.settings.REDIS_URL,
                           "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": api.url}.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(cli.main, ["reconcile", "--source", "stripe"])
    assert result.exit_code == 0, result.output
    assert "stripe: 1 changed since" in result.output and "0 stored, 0 recovered by reconciliation" in result.output


def test_a_checkout_paid_later_by_bank_debit_is_recovered_and_counted_once(client, hub):
    """A delayed method (ACH, SEPA, Bacs) completes a Checkout `unpaid` and pays it with
    checkout.session.async_payment_succeeded (https://docs.stripe.com/checkout/fulfillment);
    Stripe lists at most 20 event types a call, so reconciliation asks for these apart."""
    hour_ago = int(time.time()) - 3600
    session = {**load_sample("shared:stripe/pay/checkout.session.completed.json")["object"],
               "mode": "payment", "subscription": None, "payment_intent": "pi_debit1",
               "payment_status": "unpaid", "amount_total": 4500, "customer": "cus_rec1"}
    completed = stripe_event("checkout.session.completed", session, event_id="evt_unpaid", created=hour_ago)
    paid = stripe_event("checkout.session.async_payment_succeeded", {**session, "payment_status": "paid"},
                        event_id="evt_debit_paid", created=hour_ago + 600)
    assert post(client, "stripe", completed).status_code == 200
    with FakeStripe(key=KEY) as api:
        api.events = [paid, completed]
        api.customers = [customer()]
        hub.settings = replace(hub.settings, STRIPE_API_KEY=KEY, STRIPE_API_BASE=api.url)
        report = reconcile.run(hub)
    assert not report.sources[0].error and report.sources[0].recovered == 1
    with hub.storage.session() as s:
        [buyer] = s.scalars(select(Subscriber)).all()
        assert buyer.lifetime_spend == 4500


def spend(hub) -> int:
    with hub.storage.session() as s:
        return s.scalar(select(Subscriber.lifetime_spend).where(Subscriber.stripe_customer_id == "cus_rec1"))


@contextmanager
def paid_through_stripe(client, hub, paid: dict, charge: dict):
    """A Stripe stand-in holding the buyer and their charge, and the purchase's webhook drained."""
    with FakeStripe(key=KEY) as api:
        api.customers, api.charges[charge["id"]] = [customer()], charge
        hub.settings = replace(hub.settings, STRIPE_API_KEY=KEY, STRIPE_API_BASE=api.url)
        assert post(client, "stripe", paid).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        yield api


def test_a_chargeback_takes_its_money_off_spend_and_a_missed_dispute_won_brings_it_back(client, hub):
    """charge.dispute.funds_withdrawn, then funds_reinstated when the merchant wins
    (https://docs.stripe.com/api/events/types): the charge's amount_refunded shows neither."""
    hour_ago = int(time.time()) - 3600
    paid, charge, dispute = stripe_chargeback("cus_rec1", hour_ago)
    withdrawn = stripe_event("charge.dispute.funds_withdrawn", dispute, event_id="evt_withdrawn",
                             created=hour_ago + 60)
    won = {**dispute, "status": "won", "balance_transactions": [
        *dispute["balance_transactions"], {"amount": 4500, "currency": "usd", "fee": -1500}]}
    reinstated = stripe_event("charge.dispute.funds_reinstated", won, event_id="evt_won", created=hour_ago + 600)

    with paid_through_stripe(client, hub, paid, charge) as api:
        assert spend(hub) == 4500
        assert post(client, "stripe", withdrawn).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        assert spend(hub) == 0
        api.events = [reinstated, withdrawn]
        report = reconcile.run(hub)
    assert not report.sources[0].error and report.sources[0].recovered == 1
    assert spend(hub) == 4500


def test_a_refund_that_failed_gives_its_money_back_to_spend_and_a_missed_failure_is_recovered(client, hub):
    """A refund "can appear to succeed and later fail" (https://docs.stripe.com/testing): the
    bank returns the money. The charge's refunds, listed with their status, say what it still
    gives back, whatever its amount_refunded shows."""
    hour_ago = int(time.time()) - 3600
    paid, charge, _ = stripe_chargeback("cus_rec1", hour_ago)
    refund = {**load_sample("shared:stripe/fixtures3.json")["resources"]["refund"], "id": "re_first",
              "charge": "ch_disputed", "payment_intent": "pi_disputed", "amount": 1500}
    refunded = {**charge, "amount_refunded": 1500, "refunded": False}

    with paid_through_stripe(client, hub, paid, charge) as api:
        api.refunds = [refund]
        post(client, "stripe", stripe_event("charge.refunded", refunded, event_id="evt_refunded",
                                            created=hour_ago + 60))
        drain_inbox(hub.storage, hub.settings)
        assert spend(hub) == 4500 - 1500
        # The refund fails; its refund.failed webhook is missed, and reconciliation finds it.
        api.refunds = [{**refund, "status": "failed", "failure_reason": "expired_or_canceled_card"}]
        failed = stripe_event("refund.failed", api.refunds[0], event_id="evt_refund_failed", created=hour_ago + 600)
        api.events = [failed]
        report = reconcile.run(hub)
        assert not report.sources[0].error and report.sources[0].recovered == 1
        assert spend(hub) == 4500
        # A second refund: the charge's total may still count the failed one; its refunds do not.
        api.refunds = [{**refund, "id": "re_second", "amount": 1000}, api.refunds[0]]
        post(client, "stripe", stripe_event("charge.refunded", {**refunded, "amount_refunded": 2500},
                                            event_id="evt_refunded_again", created=hour_ago + 900))
        drain_inbox(hub.storage, hub.settings)
    assert spend(hub) == 4500 - 1000


def test_after_days_stopped_every_reminder_still_to_come_within_two_days_is_read_again(hub):
    # The last pass ran 3 days ago. Reminders already due are past mending; every one due
    # from now to 2 days ahead is read, the soonest first to matter.
    now = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    days = {"due in 12 h": 7.5, "due in 36 h": 8.5, "14-day due in 40 h": 15.66, "due 12 h ago": 6.5,
            "due in 3 days": 10}
    with hub.storage.session() as s:
        for name, ahead in days.items():
            s.add(Subscription(source="shopify", source_id=name, status="active",
                               next_renewal_at=now + timedelta(days=ahead)))
        s.commit()
        assert reconcile.renewals_due(s, "shopify", now - timedelta(days=3), now, (14, 7)) == [
            "14-day due in 40 h", "due in 12 h", "due in 36 h"]


def test_a_renewal_is_read_again_in_the_pass_two_days_before_each_of_its_reminders(hub):
    now = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    # This pass covers (now - 12 h, now]: with reminders 14 and 7 days ahead, the renewals
    # 15.5 to 16 and 8.5 to 9 days away.
    days = {"14-day": 15.75, "7-day": 8.75, "read last pass": 15.4, "far": 40, "other source": 15.75}
    with hub.storage.session() as s:
        for name, ahead in days.items():
            s.add(Subscription(source="stripe" if name == "other source" else "shopify", source_id=name,
                               status="active", next_renewal_at=now + timedelta(days=ahead)))
        s.add(Subscription(source="shopify", source_id="cancelled", status="canceled",
                           next_renewal_at=now + timedelta(days=15.75)))
        s.commit()
        assert reconcile.renewals_due(s, "shopify", now - timedelta(hours=12), now, (14, 7)) == ["14-day", "7-day"]


@pytest.mark.parametrize("status, held", [("active", "active"), ("cancelled", "canceled")])
def test_a_contract_applied_by_its_ids_alone_is_filled_in_by_the_next_reconciliation(hub, client, status, held):
    """Until Shopify approves the contract scopes, a contract webhook is applied by what it
    carries: the status, no plan, no email. The next reconciliation after the approval lists
    the contract (changed just before that webhook was triggered) and fills in what the ids did
    not say; the status the newer webhook gave stays."""
    gid, now = "gid://shopify/SubscriptionContract/7879037765", datetime.now(timezone.utc)
    changed = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    webhook = {**load_sample("shopify/subscription_contracts_update.json"), "status": status}
    with FakeShopifyAdmin(token="shpat_ok", owns_contracts=True) as admin:
        hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                               SHOPIFY_ADMIN_URL=admin.url, SHOPIFY_OWNS_CONTRACTS=True)
        admin.scopes -= CONTRACT_SCOPES
        assert post(client, "shopify", webhook, topic="subscription_contracts/update",
                    triggered_at=(now - timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        with hub.storage.session() as s:
            assert s.execute(select(Subscription.status, Subscription.plan)).all() == [(held, None)]
        add_staff(hub, "olive@shop.test", "operator")
        log_in(client, "olive@shop.test")
        assert "1 Shopify subscription is known by its ids alone" in dashboard_text(client)
        admin.scopes |= CONTRACT_SCOPES
        node = contract_node(gid, updatedAt=changed, status=status.upper())
        admin.hold(gid, updatedAt=changed, status=status.upper())
        admin.listed["subscriptionContracts"] = [node]
        [shop] = reconcile.run(hub, now=now).sources
        drain_inbox(hub.storage, hub.settings)
    assert (shop.listed, shop.stored) == (1, 1)
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber))
        [sub] = person.subscriptions
        assert person.email == "bob@biller.com"
        assert (sub.status, sub.plan, sub.amount, sub.quantity) == (held, "Example T-Shirt", 4998, 2)
        assert (sub.next_renewal_at is None) == (held == "canceled")
        assert s.scalars(select(Trigger.name).where(Trigger.name == "Plan Changed")).all() == []
    assert "known by its ids alone" not in dashboard_text(client)


def dashboard_text(client) -> str:
    dashboard._cache.clear()  # as it is now, not as the 30-second cache holds it
    return visible_text(client.get("/sync-log/dashboard").get_data(as_text=True))

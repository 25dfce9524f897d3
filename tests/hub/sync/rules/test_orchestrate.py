"""Dunning mode `orchestrate`: on each retry day the hub asks the platform to retry (Stripe
Invoice.pay, Shopify subscriptionBillingAttemptCreate), once per due date, against stand-ins."""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone

import pytest
import yaml
from sqlalchemy import select

from hub.jobs import run_time_rules
from hub.models import Trigger
from hub.sync.inbox import drain_inbox
from hub.sync.rules import params as params_
from standins.shopify import contract_node
from standins.shopify_billing import FakeShopifyBilling
from standins.stripe_billing import FakeStripeBilling
from tests.hub.sync.rules.conftest import shopify_billing_failure
from tests.samples import load_sample, post, stripe_event


@pytest.fixture
def orchestrate(hub, tmp_path):
    folder = tmp_path / "mappings"
    folder.mkdir()
    data = yaml.safe_load(params_.DEFAULT_PATH.read_text())
    data["dunning"]["mode"] = "orchestrate"
    (folder / "rules.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    hub.settings.HUB_MAPPINGS_DIR = str(folder)
    yield hub


def sweep_days(hub, first: date, count: int, times: int = 2) -> dict:
    """`hub sweep --at` every simulated morning, `times` times; fired counts by day."""
    fired = {}
    for i in range(count):
        day = first + timedelta(days=i)
        for _ in range(times):
            counts = run_time_rules(hub, datetime.combine(day, time(6), tzinfo=timezone.utc))
            if counts.get("dunning"):
                fired[day.isoformat()] = fired.get(day.isoformat(), 0) + counts["dunning"]
    return fired


def test_stripe_invoice_is_paid_on_each_retry_day_once(client, orchestrate):
    hub = orchestrate
    obj = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    with FakeStripeBilling("sk_test_orch") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_orch", stripe_.url
        post(client, "stripe", stripe_event("invoice.payment_failed", obj, event_id="evt_f", created=obj["created"]))
        drain_inbox(hub.storage, hub.settings)
        failed_on = datetime.fromtimestamp(obj["created"], timezone.utc).date()
        sweep_days(hub, failed_on + timedelta(days=1), 21)
    keys = [f"1:payment-retry:stripe:in_1234/retry-{n}" for n in (1, 2, 3)]
    assert stripe_.attempts == [("in_1234", k) for k in keys]
    paid = [c for c in stripe_.calls if c.operation == "pay_invoice"]
    assert len(paid) == 3 and [c.headers["Idempotency-Key"] for c in paid] == keys


def test_shopify_billing_attempt_on_each_retry_day_once(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        fired = sweep_days(hub, date(2026, 11, 2), 20)
    assert [contract for contract, _ in admin.attempts] == ["gid://shopify/SubscriptionContract/402440842"] * 3
    assert [key.split(":payment-retry:shopify:")[1].rsplit("/", 1)[1] for _, key in admin.attempts] == [
        "retry-1", "retry-2", "retry-3"]
    assert fired["2026-11-04"] >= 1 and fired["2026-11-08"] >= 1 and fired["2026-11-15"] >= 1
    assert retry_reasons(hub) == [f"retry {n} of 3 due today; Shopify was asked to charge again" for n in (1, 2, 3)]


def test_notify_mode_asks_nothing(client, hub):
    obj = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    with FakeStripeBilling("sk_test_orch") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_orch", stripe_.url
        post(client, "stripe", stripe_event("invoice.payment_failed", obj, event_id="evt_f", created=obj["created"]))
        drain_inbox(hub.storage, hub.settings)
        failed_on = datetime.fromtimestamp(obj["created"], timezone.utc).date()
        # Stripe's announced retry (next_payment_attempt, 2025-04-25) with the reminders on it and
        # 3 days after (no later failure named another), nothing from the hub's own cadence.
        assert sweep_days(hub, failed_on + timedelta(days=1), 21, times=1) == {"2025-04-25": 2, "2025-04-28": 1}
    assert stripe_.attempts == []


def test_a_new_card_while_a_payment_is_owed_asks_stripe_to_retry_it_once(client, orchestrate):
    hub = orchestrate
    obj = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    card = load_sample("shared:stripe/pay/payment_method.updated.json")  # the same customer, cus_1234
    with FakeStripeBilling("sk_test_orch") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_orch", stripe_.url
        post(client, "stripe", stripe_event("invoice.payment_failed", obj, event_id="evt_f", created=obj["created"]))
        drain_inbox(hub.storage, hub.settings)
        for event_id in ("evt_card", "evt_card"):  # Stripe delivers it twice
            post(client, "stripe", stripe_event("payment_method.updated", card["object"], event_id=event_id,
                                                created=obj["created"] + 3600,
                                                previous_attributes=card["previous_attributes"]))
            drain_inbox(hub.storage, hub.settings)
    [(invoice, key)] = stripe_.attempts
    assert (invoice, key.split(":", 1)[1]) == (
        "in_1234", "payment-method-updated:stripe:pm_1000/2035-12")


def test_shopify_refuses_to_bill_a_paused_contract_and_the_log_says_why(client, orchestrate, caplog):
    hub = orchestrate
    gid = "gid://shopify/SubscriptionContract/402440842"
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.contracts[gid] = contract_node(gid, status="PAUSED")  # paused at the store since the failure
        with caplog.at_level(logging.WARNING, logger="hub.sync.rules.dunning"):
            sweep_days(hub, date(2026, 11, 2), 3)
    assert admin.attempts == []  # Shopify bills only an active contract
    [refused] = [r.getMessage() for r in caplog.records if "retry of shopify payment" in r.getMessage()]
    assert "Subscription contract cannot be billed if paused. (CONTRACT_PAUSED)" in refused
    # The retry's reason, as the customer's page shows it, says the charge was not made and why.
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Shopify did not charge again: "
                                  "Subscription contract cannot be billed if paused. (CONTRACT_PAUSED)"]


def retry_reasons(hub) -> list[str]:
    with hub.storage.session() as s:
        return list(s.scalars(select(Trigger.reason).where(Trigger.rule == "payment-retry").order_by(Trigger.id)))

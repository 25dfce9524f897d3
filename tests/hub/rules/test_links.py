"""Update-payment links on dunning and card-expiry triggers, resolved when the trigger is
stored: a Stripe billing-portal session (stand-in), the Shopify customer account page."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from hub import rules
from hub.inbox import drain_inbox
from hub.models import Delivery, Trigger
from tests.hub.rules.conftest import shopify_billing_failure
from tests.samples import load_sample, post, stripe_event
from webhooks.standins.shopify_billing import FakeShopifyBilling
from webhooks.standins.stripe_billing import FakeStripeBilling


@pytest.fixture(autouse=True)
def _forget_settings():
    yield
    rules.configure(None)  # later tests must not call this test's stand-ins


def failed_invoice(event_id="evt_fail_1"):
    obj = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    return stripe_event("invoice.payment_failed", obj, event_id=event_id, created=obj["created"] + 60)


def triggers(hub, name):
    with hub.storage.session() as s:
        return s.scalars(select(Trigger).where(Trigger.name == name).order_by(Trigger.id)).all()


def test_stripe_payment_failed_carries_a_billing_portal_link_to_klaviyo(client, hub):
    with FakeStripeBilling("sk_test_links") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_links", stripe_.url
        hub.settings.HUB_BILLING_RETURN_URL = "https://shop.example/account"
        hub.settings.KLAVIYO_API_KEY = "pk_test_links"
        assert post(client, "stripe", failed_invoice()).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        # The same failure again (Stripe resends with a new event id): no second session.
        post(client, "stripe", failed_invoice("evt_fail_2"))
        drain_inbox(hub.storage, hub.settings)

    [session] = stripe_.sessions
    assert session["customer"] == "cus_1234" and session["return_url"] == "https://shop.example/account"
    [failed] = triggers(hub, "Payment Failed")
    assert failed.properties["update_payment_url"] == session["url"]
    with hub.storage.session() as s:
        [delivery] = s.scalars(select(Delivery).where(Delivery.connector == "klaviyo",
                                                      Delivery.trigger_id == failed.id)).all()
        assert delivery.payload["properties"]["update_payment_url"] == session["url"]


def test_without_an_answer_from_stripe_the_trigger_keeps_the_invoice_link(client, hub):
    with FakeStripeBilling("sk_test_links") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_wrong", stripe_.url
        post(client, "stripe", failed_invoice())
        drain_inbox(hub.storage, hub.settings)
    [failed] = triggers(hub, "Payment Failed")
    assert failed.properties["update_payment_url"] == "https://invoice.stripe.com/"
    assert stripe_.sessions == [] and stripe_.calls[0].status == 401


def test_shopify_billing_failure_links_the_customer_account(client, hub):
    with FakeShopifyBilling(token="shpat_links") as admin:
        shopify_billing_failure(client, hub, admin, "shpat_links")
        drain_inbox(hub.storage, hub.settings)
    [failed] = triggers(hub, "Payment Failed")
    assert failed.properties["source"] == "shopify"
    assert failed.properties["update_payment_url"] == "https://example.myshopify.com/account"


def test_sweep_links_reminders_once(tmp_path, monkeypatch):
    """The sweep path: Payment Reminder and Card Expiring get a link; a second sweep of the
    same day stores nothing and asks Stripe for nothing."""
    from hub.config import Settings
    from tests.hub.rules.conftest import World, monthly

    world = World(tmp_path)
    with FakeStripeBilling("sk_test_sweep") as stripe_:
        rules.configure(Settings.from_env(env={}, overrides={"STRIPE_API_KEY": "sk_test_sweep",
                                                             "STRIPE_API_BASE": stripe_.url}))
        world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
        world.emit("payment.failed", "2026-02-01T10:05", {"source_id": "in_1", "subscription_source_id": "sub_1",
                                                           "amount": 2500, "currency": "USD"})
        assert len(stripe_.sessions) == 1  # Payment Failed, on the event path
        assert world.sweep("2026-02-04T06:00") == {"dunning": 2}  # retry 1 and its reminder
        assert world.sweep("2026-02-04T07:00") == {}
    assert len(stripe_.sessions) == 2  # one per stored batch and customer, none for the rerun
    with world.storage.session() as s:
        rows = s.scalars(select(Trigger).where(Trigger.rule.in_(("payment-retry", "payment-reminder")))).all()
        assert {t.properties["update_payment_url"] for t in rows} == {stripe_.sessions[1]["url"]}

"""Update-payment links on dunning and card-expiry triggers, made when the trigger is stored:
a stable hub URL per trigger (`{HUB_BASE_URL}/l/<token>`); the platform's page is made at the
click (tests/hub/web/test_links.py)."""
from __future__ import annotations

from sqlalchemy import select

from hub.models import CustomerLink, Delivery, Trigger
from hub.sync.inbox import drain_inbox
from standins.shopify_billing import FakeShopifyBilling
from standins.stripe_billing import FakeStripeBilling
from tests.hub.sync.rules.conftest import failed_invoice, shopify_billing_failure
from tests.samples import post


def triggers(hub, name):
    with hub.storage.session() as s:
        return s.scalars(select(Trigger).where(Trigger.name == name).order_by(Trigger.id)).all()


def links(storage):
    with storage.session() as s:
        return s.scalars(select(CustomerLink).order_by(CustomerLink.id)).all()


def test_stripe_payment_failed_carries_a_hub_link_to_klaviyo(client, hub):
    with FakeStripeBilling("sk_test_links") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_links", stripe_.url
        hub.settings.HUB_BASE_URL = "https://hub.shop.example/"
        hub.settings.KLAVIYO_API_KEY = "pk_test_links"
        assert post(client, "stripe", failed_invoice()).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        # The same failure again (Stripe resends with a new event id): no second link.
        post(client, "stripe", failed_invoice("evt_fail_2"))
        drain_inbox(hub.storage, hub.settings)

    assert stripe_.sessions == []  # made at the click, not when the email goes out
    [failed] = triggers(hub, "Payment Failed")
    [link] = links(hub.storage)
    assert (link.trigger_id, link.source, link.customer_id, link.purpose) == (failed.id, "stripe", "cus_1234",
                                                                              "update_payment")
    assert failed.properties["update_payment_url"] == f"https://hub.shop.example/l/{link.token}"
    with hub.storage.session() as s:
        [delivery] = s.scalars(select(Delivery).where(Delivery.connector == "klaviyo",
                                                      Delivery.trigger_id == failed.id)).all()
        assert delivery.payload["properties"]["update_payment_url"] == failed.properties["update_payment_url"]


def test_without_stripe_configured_the_trigger_keeps_the_invoice_link(client, hub):
    hub.settings.STRIPE_API_KEY = ""
    post(client, "stripe", failed_invoice())
    drain_inbox(hub.storage, hub.settings)
    [failed] = triggers(hub, "Payment Failed")
    assert failed.properties["update_payment_url"] == "https://invoice.stripe.com/"
    assert links(hub.storage) == []


def test_shopify_billing_failure_links_through_the_hub(client, hub):
    with FakeShopifyBilling(token="shpat_links", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_links")
        drain_inbox(hub.storage, hub.settings)
    [failed] = triggers(hub, "Payment Failed")
    [link] = links(hub.storage)
    assert failed.properties["source"] == "shopify" and link.source == "shopify"
    assert failed.properties["update_payment_url"] == f"{hub.settings.HUB_BASE_URL}/l/{link.token}"


def test_sweep_links_reminders_once(tmp_path, monkeypatch):
    """The sweep path: Payment Reminder and Card Expiring get a link each; a second sweep of
    the same day stores nothing and makes no link."""
    from hub.config import Settings
    from tests.hub.sync.rules.conftest import World, monthly

    world = World(tmp_path)
    with FakeStripeBilling("sk_test_sweep") as stripe_:
        world.settings = Settings.from_env(env={}, overrides={"STRIPE_API_KEY": "sk_test_sweep",
                                                              "STRIPE_API_BASE": stripe_.url})
        world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
        world.emit("payment.failed", "2026-02-01T10:05", {"source_id": "in_1", "subscription_source_id": "sub_1",
                                                           "amount": 2500, "currency": "USD"})
        assert len(links(world.storage)) == 1  # Payment Failed, on the event path
        assert world.sweep("2026-02-04T06:00") == {"dunning": 2}  # retry 1 and its reminder
        assert world.sweep("2026-02-04T07:00") == {}
    assert stripe_.sessions == []
    made = links(world.storage)
    assert len(made) == 3 and len({m.token for m in made}) == 3  # one per trigger, none for the rerun
    with world.storage.session() as s:
        rows = s.scalars(select(Trigger).where(Trigger.rule.in_(("payment-retry", "payment-reminder")))).all()
        assert {t.properties["update_payment_url"] for t in rows} == {
            f"http://127.0.0.1:8000/l/{m.token}" for m in made if m.trigger_id in {t.id for t in rows}}

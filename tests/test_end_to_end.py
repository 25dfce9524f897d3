"""Whole paths: a signed webhook in, through the worker, to the model and the tools."""
from __future__ import annotations

from sqlalchemy import select

from hub.db.unit import UnitOfWork
from hub.models import InboxEvent, Subscriber
from hub.sync.inbox import drain_inbox
from standins.shopify import INTERNAL_ERROR, FakeShopifyAdmin
from tests.samples import API_HEADERS, SAMPLE_CONTRACT, load_sample, post


def test_shopify_contract_webhook_with_ids_only_is_completed_from_the_admin_api(client, hub):
    """The contract webhook has no email, price or date: the worker fetches them."""
    with FakeShopifyAdmin(token="shpat_e2e", owns_contracts=True).hold(SAMPLE_CONTRACT) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        response = post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
                        topic="subscription_contracts/create", webhook_id="wh-contract-1")
        assert response.status_code == 200
        drain_inbox(hub.storage, hub.settings)
        assert admin.requests and admin.requests[0]["variables"]["id"] == "gid://shopify/SubscriptionContract/402440842"

    body = client.get("/api/subscribers/bob@biller.com", headers=API_HEADERS).get_json()
    [subscription] = body["subscriber"]["subscriptions"]
    assert subscription["source"] == "shopify" and subscription["source_id"] == "402440842"
    assert subscription["amount"] == 4998 and subscription["currency"] == "CAD"
    assert subscription["interval"] == "week" and subscription["interval_count"] == 4
    assert subscription["next_renewal_at"] == "2026-11-29T12:00:00+00:00"


def test_shopify_contract_fetch_failure_marks_the_row_failed_and_replay_recovers_it(client, hub):
    with FakeShopifyAdmin(token="shpat_e2e", owns_contracts=True).hold(SAMPLE_CONTRACT) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        admin.errors = INTERNAL_ERROR
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-contract-2")
        drain_inbox(hub.storage, hub.settings)
        with hub.storage.session() as s:
            row = s.scalar(select(InboxEvent))
            assert row.status == "failed" and "INTERNAL_SERVER_ERROR" in row.error
            assert s.scalar(select(Subscriber)) is None

        admin.errors = None
        from hub.sync.inbox import replay

        with hub.storage.session() as s:
            replay(UnitOfWork(s), s.scalar(select(InboxEvent)), hub.settings)
    with hub.storage.session() as s:
        assert s.scalar(select(InboxEvent.status)) == "processed"
        assert s.scalar(select(Subscriber.email)) == "bob@biller.com"


def _push_until_settled(hub, connector: str, start, rounds: int = 40) -> None:
    """Push as workers would, letting simulated time pass so Retry-After waits elapse."""
    from datetime import timedelta

    from hub.sync import outbox

    for n in range(rounds):
        outbox.push_batch(hub.storage, hub.settings, connector, now=start + timedelta(minutes=n))
    with hub.storage.session() as s:
        from hub.models import Delivery

        open_rows = s.scalars(select(Delivery).where(Delivery.status.in_(("queued", "retrying")))).all()
        assert open_rows == [], [(d.kind, d.status, d.last_error) for d in open_rows]


def test_webhooks_reach_klaviyo_exactly_once_while_it_answers_429_to_a_third(client, hub):
    """Signed Stripe webhooks → profile, consent and events in the Klaviyo stand-in, each once."""
    from datetime import datetime, timezone

    from standins.klaviyo import FakeKlaviyo
    from tests.samples import stripe_event

    t0 = 1_790_000_000
    customer = {"id": "cus_e2e", "object": "customer", "email": "Ada@Example.com", "name": "Ada Lovelace",
                "created": t0}
    session_obj = load_sample("shared:stripe/pay/checkout.session.completed.json")["object"]
    session_obj.update(customer="cus_e2e", subscription="sub_e2e", consent={"promotions": "opt_in"},
                       customer_details={**session_obj["customer_details"], "email": "ada@example.com"})
    subscription = load_sample("shared:stripe/pay/subscription.created.json")["object"]
    subscription.update(id="sub_e2e", customer="cus_e2e", created=t0, start_date=t0)
    failed = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    failed.update(customer="cus_e2e", id="in_e2e")

    with FakeKlaviyo(api_key="pk_e2e") as klaviyo:
        hub.settings.KLAVIYO_API_KEY = "pk_e2e"
        hub.settings.KLAVIYO_BASE_URL = klaviyo.url
        klaviyo.fail(429, retry_after=2, fraction=1 / 3)
        events = [stripe_event("customer.created", customer, event_id="evt_e1", created=t0),
                  stripe_event("checkout.session.completed", session_obj, event_id="evt_e2", created=t0 + 1),
                  stripe_event("customer.subscription.created", subscription, event_id="evt_e3", created=t0 + 2),
                  stripe_event("invoice.payment_failed", failed, event_id="evt_e4", created=t0 + 3)]
        for event in events + events[:2]:  # Stripe resends some: nothing may go out twice
            assert post(client, "stripe", event).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        _push_until_settled(hub, "klaviyo", datetime.now(timezone.utc))

        answered_429 = sum(1 for c in klaviyo.calls if c.status == 429)
        assert answered_429 >= 1
        profile = klaviyo.profile("ada@example.com")
        assert profile is not None
        assert profile["properties"]["hub_subscription_status"] in ("active", "past_due")
        unique_ids = [e["unique_id"] for e in klaviyo.events]
        assert len(unique_ids) == len(set(unique_ids)), "an event reached Klaviyo twice"
        metrics = sorted(e["metric"] for e in klaviyo.events)
        assert "Subscription Started" in metrics and "Payment Failed" in metrics
        with hub.storage.session() as s:
            from hub.models import Trigger

            fired = sorted(t.name for t in s.scalars(select(Trigger).where(Trigger.status == "fired")))
        assert metrics == fired
        consent = klaviyo.consent[klaviyo.profile_id("ada@example.com")]
        assert consent["email"]["consent"] == "SUBSCRIBED"

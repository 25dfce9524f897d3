"""Links in triggers are stable hub URLs (`/l/<token>`): an email opened weeks later still
leads to a page where the customer updates their card, through a platform session made
at the click."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
import stripe
from sqlalchemy import select

from hub.masking import MaskPersonalData
from hub.models import Subscriber, Trigger
from hub.sync.compliance import erase_subscriber
from hub.sync.inbox import drain_inbox
from hub.sync.readmodel import timeline
from standins.chargebee import FakeChargebee
from standins.shopify_billing import FakeShopifyBilling
from standins.stripe_billing import FakeStripeBilling
from tests.hub.sync.rules.conftest import failed_invoice, shopify_billing_failure  # noqa: F401 - a fixture
from tests.samples import load_sample, post
from webhooks import SOURCES

HUB = "https://hub.shop.example"
TWO_WEEKS = timedelta(days=14).total_seconds()




def payment_failed(hub) -> Trigger:
    with hub.storage.session() as s:
        [trigger] = s.scalars(select(Trigger).where(Trigger.name == "Payment Failed")).all()
        s.expunge(trigger)
        return trigger


def open_in_browser(client, url: str):
    """Follow an emailed link as a browser: through the hub (test client), then the platform."""
    if url.startswith(HUB):
        answer = client.get(url.removeprefix(HUB))
        assert answer.status_code == 303, answer.get_data(as_text=True)
        url = answer.headers["Location"]
    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            return page.status, json.loads(page.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def stripe_failure(client, hub):
    with FakeStripeBilling("sk_test_links") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_links", stripe_.url
        hub.settings.HUB_BASE_URL = HUB
        assert post(client, "stripe", failed_invoice()).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        yield stripe_


def test_a_payment_failed_email_opened_two_weeks_later_still_updates_the_card(client, hub, stripe_failure, viewer):
    link = payment_failed(hub).properties["update_payment_url"]
    assert link.startswith(f"{HUB}/l/") and "cus_" not in link and "1234" not in link

    stripe_failure.clock += TWO_WEEKS  # any portal session made when the email went out is dead
    status, page = open_in_browser(client, link)

    assert status == 200 and page["customer"] == "cus_1234"
    assert page["flow"] == "payment_method_update" and page["can_update_payment_method"]
    html = viewer.get(f"/sync-log/subscribers/{payment_failed(hub).subscriber_id}").get_data(as_text=True)
    assert "Link clicked: update payment (Stripe portal)" in html
    with hub.storage.session() as s:
        [click] = [i for i in timeline(s, payment_failed(hub).subscriber_id) if i["kind"] == "link"]
    assert (click["purpose"], click["source"], click["outcome"]) == ("update_payment", "stripe", "redirected")


def test_a_repeated_failure_webhook_makes_no_second_link(client, hub, stripe_failure):
    first = payment_failed(hub).properties["update_payment_url"]
    post(client, "stripe", failed_invoice("evt_fail_2"))
    drain_inbox(hub.storage, hub.settings)
    assert payment_failed(hub).properties["update_payment_url"] == first
    assert stripe_failure.sessions == []  # nothing is asked of Stripe before a click


@pytest.mark.parametrize("token", ["forged-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x", "%00", "a" * 600])
def test_a_forged_link_gets_a_plain_page(client, hub, token):
    answer = client.get(f"/l/{token}")
    assert 400 <= answer.status_code < 500
    assert "no longer valid" in answer.get_data(as_text=True)


def test_an_expired_link_gets_a_plain_page_and_asks_stripe_nothing(client, hub, stripe_failure):
    link = payment_failed(hub).properties["update_payment_url"]
    hub.settings.HUB_LINK_TTL_DAYS = 0
    answer = client.get(link.removeprefix(HUB))
    assert answer.status_code == 410 and "no longer valid" in answer.get_data(as_text=True)
    assert stripe_failure.sessions == []


def test_stripe_down_at_the_click_gets_a_try_again_page(client, hub, stripe_failure):
    link = payment_failed(hub).properties["update_payment_url"]
    stripe_failure.fail(503, times=10)
    answer = client.get(link.removeprefix(HUB))
    assert answer.status_code == 503 and "try again" in answer.get_data(as_text=True).lower()


def test_a_shopify_link_leads_to_the_customer_account(client, hub):
    hub.settings.HUB_BASE_URL = HUB
    with FakeShopifyBilling(token="shpat_links", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_links")
        drain_inbox(hub.storage, hub.settings)
    link = payment_failed(hub).properties["update_payment_url"]
    assert link.startswith(f"{HUB}/l/")
    answer = client.get(link.removeprefix(HUB))
    assert answer.status_code == 303
    assert answer.headers["Location"] == "https://example.myshopify.com/account"


def test_a_chargebee_payment_failed_link_opens_a_live_hosted_page_two_weeks_later(client, hub):
    with FakeChargebee(api_key="cb_test_links") as chargebee:
        hub.settings.CHARGEBEE_API_KEY, hub.settings.CHARGEBEE_API_BASE = "cb_test_links", chargebee.url
        hub.settings.HUB_BASE_URL = HUB
        assert post(client, "chargebee", load_sample("chargebee/payment_failed.json")).status_code == 200
        drain_inbox(hub.storage, hub.settings)
        link = payment_failed(hub).properties["update_payment_url"]
        assert link.startswith(f"{HUB}/l/") and chargebee.hosted_pages == []

        chargebee.clock += TWO_WEEKS
        status, page = open_in_browser(client, link)
    assert status == 200 and page["page"] == "manage_payment_sources"
    [made] = chargebee.hosted_pages
    assert page["customer"] == made["customer_id"] and made["customer_id"] in load_sample(
        "chargebee/payment_failed.json")["content"]["customer"]["id"]


@pytest.mark.parametrize("purpose, subscription, flow", [
    ("update_payment", None, "payment_method_update"),
    ("manage_subscription", "sub_1", "subscription_update"),
    ("cancel", "sub_1", "subscription_cancel"),
    ("cancel", None, None),  # Stripe refuses a cancel flow naming no subscription: the portal's homepage
])
def test_each_purpose_opens_its_stripe_portal_flow(hub, purpose, subscription, flow):
    with FakeStripeBilling("sk_test_flows") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_flows", stripe_.url
        url = SOURCES["stripe"].customer_page(hub.settings, "cus_9", purpose, subscription)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert json.loads(page.read())["flow"] == flow
    [session] = stripe_.sessions
    assert (session["flow"] or {}).get(flow or "none", {"subscription": None})["subscription"] == subscription


def test_the_stripe_stand_in_refuses_a_cancel_flow_without_a_subscription():
    with FakeStripeBilling("sk_test_flows") as stripe_:
        client = stripe.StripeClient("sk_test_flows", base_addresses={"api": stripe_.url})
        with pytest.raises(stripe.InvalidRequestError, match="subscription_cancel"):
            client.v1.billing_portal.sessions.create({"customer": "cus_9",
                                                      "flow_data": {"type": "subscription_cancel"}})


def test_a_link_of_an_erased_customer_no_longer_opens_their_portal(client, hub, stripe_failure):
    trigger = payment_failed(hub)
    with hub.storage.session() as s:
        erase_subscriber(s, s.get(Subscriber, trigger.subscriber_id), "customers/redact")
    answer = client.get(trigger.properties["update_payment_url"].removeprefix(HUB))
    assert answer.status_code == 404 and stripe_failure.sessions == []


def test_an_access_log_line_does_not_keep_the_token(hub, stripe_failure):
    link = payment_failed(hub).properties["update_payment_url"]
    token = link.rsplit("/", 1)[1]
    record = logging.LogRecord("granian.access", logging.INFO, __file__, 1, '"GET %s HTTP/1.1" 303', (link,), None)
    MaskPersonalData().filter(record)
    assert token not in record.getMessage() and "/l/[token]" in record.getMessage()


def test_a_link_checker_asking_head_makes_no_session_and_no_click(client, hub, stripe_failure):
    link = payment_failed(hub).properties["update_payment_url"]
    assert client.head(link.removeprefix(HUB)).status_code == 200
    assert stripe_failure.sessions == []
    with hub.storage.session() as s:
        assert [i for i in timeline(s, payment_failed(hub).subscriber_id) if i["kind"] == "link"] == []

"""The update-payment link of a Recharge customer opens the store's Recharge customer portal on
its payment methods page, at the customer's hash asked for at the click."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from sqlalchemy import select

from hub.models import Trigger
from hub.sync.inbox import drain_inbox
from standins.recharge import FakeRecharge
from tests.samples import load_sample, post
from webhooks.recharge import api

HUB = "https://hub.shop.example"
TOKEN = "rc_links_token"
CUSTOMER_ID = 33333333  # the customer of the charge samples


def open_in_browser(client, url: str):
    """Follow an emailed link as a browser: through the hub (test client), then Recharge."""
    answer = client.get(url.removeprefix(HUB))
    assert answer.status_code == 303, answer.get_data(as_text=True)
    try:
        with urllib.request.urlopen(answer.headers["Location"], timeout=10) as page:
            return page.status, json.loads(page.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_failed_charge_links_to_the_portal_payment_methods_page_made_at_the_click(client, hub):
    with FakeRecharge(token=TOKEN) as rc:
        rc.customers = [{"id": CUSTOMER_ID, "hash": "6edd4a4f6ca8b1658c581e597ce492",
                         "updated_at": "2022-03-09T02:36:35"}]
        hub.settings.RECHARGE_API_KEY, hub.settings.RECHARGE_API_BASE = TOKEN, rc.url
        hub.settings.RECHARGE_PORTAL_URL = rc.url
        hub.settings.HUB_BASE_URL = HUB
        failed = load_sample("recharge/charge_failed.json")
        assert post(client, "recharge", failed, topic="charge/failed").status_code == 200
        drain_inbox(hub.storage, hub.settings)
        with hub.storage.session() as s:
            [trigger] = s.scalars(select(Trigger).where(Trigger.name == "Payment Failed")).all()
        link = trigger.properties["update_payment_url"]
        assert link.startswith(f"{HUB}/l/") and rc.operations("get_customer") == []  # nothing asked yet

        status, page = open_in_browser(client, link)
    assert (status, page) == (200, {"page": "payment_methods", "customer": CUSTOMER_ID, "sign_in": "email code"})
    assert len(rc.operations("get_customer")) == 1


def test_other_purposes_open_the_subscriptions_page_and_without_a_key_or_portal_no_page(hub):
    with FakeRecharge(token=TOKEN) as rc:
        rc.customers = [{"id": CUSTOMER_ID, "hash": "h1", "updated_at": "2022-03-09T02:36:35"}]
        hub.settings.RECHARGE_API_KEY, hub.settings.RECHARGE_API_BASE = TOKEN, rc.url
        hub.settings.RECHARGE_PORTAL_URL, hub.settings.SHOPIFY_SHOP = "", "example.myshopify.com"
        url = api.customer_page_url(hub.settings, str(CUSTOMER_ID), "cancel", "1111111")
        assert url == "https://example.myshopify.com/tools/recurring/portal/h1/subscriptions"
        hub.settings.SHOPIFY_SHOP = ""
        assert api.customer_page_url(hub.settings, str(CUSTOMER_ID), "cancel") is None
        hub.settings.RECHARGE_PORTAL_URL, hub.settings.RECHARGE_API_KEY = rc.url, ""
        assert api.customer_page_url(hub.settings, str(CUSTOMER_ID), "cancel") is None

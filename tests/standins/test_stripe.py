"""The Stripe stand-in answers as Stripe does, through the official SDK: the invoice-item listing,
and an endpoint's event types."""
from __future__ import annotations

import pytest
import stripe

from standins.stripe import FakeStripe

SUB = {"id": "sub_1", "customer": "cus_1", "currency": "usd",
       "items": {"data": [{"current_period_end": 2000}]}}


def test_invoice_items_list_by_customer_creation_time_and_pending():
    with FakeStripe(key="sk_test_items") as api:
        early, late = api.prorate(SUB, [-100], 900)[0], api.prorate(SUB, [250], 1000)[0]
        api.prorate({**SUB, "customer": "cus_2"}, [7], 1000)
        late["invoice"] = "in_next"  # already on the next invoice
        client = stripe.StripeClient("sk_test_items", base_addresses={"api": api.url})
        listed = client.v1.invoice_items.list(params={"customer": "cus_1", "created": {"gte": 950, "lte": 1000}})
        pending = client.v1.invoice_items.list(params={"customer": "cus_1", "pending": True})
    assert [(i.id, i.amount, i.proration, i.period.end) for i in listed.data] == [(late["id"], 250, True, 2000)]
    assert [i.id for i in pending.data] == [early["id"]]


def test_an_endpoint_enabling_an_event_type_stripe_does_not_have_is_refused():
    with FakeStripe(key="sk_test_events") as api:
        client = stripe.StripeClient("sk_test_events", base_addresses={"api": api.url})
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.webhook_endpoints.create(params={"url": "https://hub.example/webhooks/stripe",
                                                       "enabled_events": ["charge.refunded", "charge.refundd"]})
    assert refused.value.param == "enabled_events[1]"
    assert api.webhook_endpoints == {}

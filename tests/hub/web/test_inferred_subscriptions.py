"""The subscriber page marks a subscription inferred from selling-plan orders and its estimated renewal."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub.models import Subscriber
from tests.hub.sync.test_inference import FIRST, order, send


def test_the_page_names_the_inference_and_calls_the_next_renewal_an_estimate(client, hub, operator):
    send(client, hub, "orders/paid", order(1, FIRST, plan_name="Delivery every 2 weeks"))
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber.id).where(Subscriber.email == "john@example.com"))
    page = operator.get(f"/sync-log/subscribers/{person}").get_data(as_text=True)
    assert "Shopify, inferred from selling-plan orders" in page
    renewal = FIRST + timedelta(days=14)
    assert f"{renewal.day} {renewal:%b %Y, %H:%M} UTC <span class=\"muted\">(estimate)</span>" in page

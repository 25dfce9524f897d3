"""A small shop posted through the real signed webhook endpoints: customers, subscriptions,
plan changes, cancellations, failed and recovered payments, at chosen instants.

    shop = Shop(client)
    shop.customer("cus_1", "ada@example.com", "Ada Lovelace", at=days_ago(90))
    shop.subscribe("cus_1", "sub_1", amount=2900, at=days_ago(90))
    drain_inbox(hub.storage, hub.settings)
"""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from tests.samples import post, stripe_event


def days_ago(days: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)


def _ts(at: datetime) -> int:
    return int(at.timestamp())


class Shop:
    """Posts Stripe webhooks for a simulated store; every event gets a fresh id."""

    def __init__(self, client):
        self.client = client
        self._ids = itertools.count(1)
        self.plans: dict[str, tuple[int, str]] = {}

    def _post(self, event_type: str, obj: dict, at: datetime) -> str:
        event_id = f"evt_shop_{next(self._ids)}"
        response = post(self.client, "stripe", stripe_event(event_type, obj, event_id=event_id, created=_ts(at)))
        assert response.status_code == 200, response.get_data(as_text=True)
        return event_id

    def customer(self, customer_id: str, email: str, name: str, at: datetime, phone: str | None = None) -> str:
        return self._post("customer.created", {"id": customer_id, "object": "customer", "email": email,
                                               "name": name, "phone": phone, "created": _ts(at)}, at)

    def _subscription(self, sub_id, customer_id, at, amount, plan, status="active", canceled_at=None,
                      more_items=()):
        self.plans[sub_id] = (amount, plan)
        # Since API 2025-03-31 periods are on the items, each by its own interval.
        items = [(amount, "month", plan), *((extra, interval, f"{plan} {interval}ly")
                                            for extra, interval in more_items)]
        return {"id": sub_id, "object": "subscription", "customer": customer_id, "status": status,
                "cancel_at_period_end": False, "canceled_at": _ts(canceled_at) if canceled_at else None,
                "created": _ts(at), "pause_collection": None,
                "items": {"object": "list", "data": [{
                    "id": f"si_{sub_id}_{n}", "object": "subscription_item", "quantity": 1,
                    "current_period_start": _ts(at),
                    "current_period_end": _ts(at + timedelta(days=365 if interval == "year" else 30)),
                    "price": {"id": f"price_{name.lower().replace(' ', '_')}", "object": "price",
                              "nickname": name, "unit_amount": price, "currency": "usd",
                              "product": "prod_box", "recurring": {"interval": interval, "interval_count": 1}}}
                    for n, (price, interval, name) in enumerate(items)]}}

    def subscribe(self, customer_id: str, sub_id: str, at: datetime, amount: int = 2900, plan: str = "Basic",
                  status: str = "active", more_items: tuple = ()) -> str:
        """`more_items`: (amount, interval) of items billed on other intervals than the monthly one."""
        return self._post("customer.subscription.created",
                          self._subscription(sub_id, customer_id, at, amount, plan, status,
                                             more_items=more_items), at)

    def pause(self, customer_id: str, sub_id: str, at: datetime, resumes_at: datetime | None = None,
              behavior: str = "void") -> str:
        """Pause collection: Stripe keeps the status `active` and sets `pause_collection`
        (https://docs.stripe.com/billing/subscriptions/pause-payment)."""
        amount, plan = self.plans.get(sub_id, (2900, "Basic"))
        sub = self._subscription(sub_id, customer_id, at, amount, plan)
        sub["pause_collection"] = {"behavior": behavior,
                                   "resumes_at": _ts(resumes_at) if resumes_at else None}
        return self._post("customer.subscription.updated", sub, at)

    def change_plan(self, customer_id: str, sub_id: str, at: datetime, amount: int, plan: str) -> str:
        return self._post("customer.subscription.updated",
                          self._subscription(sub_id, customer_id, at, amount, plan), at)

    def cancel(self, customer_id: str, sub_id: str, at: datetime, reason: str | None = None) -> str:
        """`reason` as Stripe's cancellation_details.reason (payment_failed when dunning ended it);
        None sends none, as events from before API 2023-08-16 did."""
        amount, plan = self.plans.get(sub_id, (2900, "Basic"))
        subscription = self._subscription(sub_id, customer_id, at, amount, plan, "canceled", canceled_at=at)
        if reason:
            subscription["cancellation_details"] = {"reason": reason, "feedback": None, "comment": None}
        return self._post("customer.subscription.deleted", subscription, at)

    def invoice(self, customer_id: str, sub_id: str, invoice_id: str, at: datetime, paid: bool,
                amount: int = 2900, attempt: int = 1) -> str:
        obj = {"id": invoice_id, "object": "invoice", "customer": customer_id, "subscription": sub_id,
               "status": "paid" if paid else "open", "amount_due": amount, "amount_paid": amount if paid else 0,
               "currency": "usd", "attempt_count": attempt, "created": _ts(at),
               "next_payment_attempt": None if paid else _ts(at + timedelta(days=3)),
               "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
               "status_transitions": {"paid_at": _ts(at) if paid else None}}
        return self._post("invoice.paid" if paid else "invoice.payment_failed", obj, at)

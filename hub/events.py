"""Canonical events: the one vocabulary every source is normalized into (design §4).

A normalizer returns a list of CanonicalEvent. `data` holds the event's fields with
the keys listed in EVENTS; money is integer minor units with an upper-case currency,
times are UTC-aware datetimes, platform ids are strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hub.values import iso, utc

CUSTOMER_UPSERTED = "customer.upserted"
CUSTOMER_DELETED = "customer.deleted"
CONSENT_CHANGED = "consent.changed"
ORDER_PLACED = "order.placed"
ORDER_PAID = "order.paid"
ORDER_REFUNDED = "order.refunded"
ORDER_CANCELLED = "order.cancelled"
SUBSCRIPTION_UPSERTED = "subscription.upserted"
SUBSCRIPTION_CANCELED = "subscription.canceled"
TRIAL_ENDING = "trial.ending"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
PAYMENT_ACTION_REQUIRED = "payment.action_required"
# The platform stopped collecting a payment: written off ("uncollectible") or cancelled ("void").
PAYMENT_CLOSED = "payment.closed"
RENEWAL_UPCOMING = "renewal.upcoming"
PAYMENT_METHOD_EXPIRING = "payment_method.expiring"
PAYMENT_METHOD_UPDATED = "payment_method.updated"
SUBSCRIBER_ERASE = "subscriber.erase"
DATA_REQUEST = "data.request"
APP_UNINSTALLED = "app.uninstalled"
INVENTORY_CHANGED = "inventory.changed"

# Where a subscription's facts come from, as flows see it (the `hub_subscription_source`
# profile property): the subscription's source, except that a Shopify subscription is either
# a contract the hub's app owns or one inferred from the selling-plan orders another app makes.
INFERRED_SOURCE = "shopify_inferred"
_SUBSCRIPTION_SOURCES = {"shopify": "shopify_contract"}


def subscription_source(source: str | None) -> str | None:
    """The `hub_subscription_source` value of a subscription held under `source`."""
    return _SUBSCRIPTION_SOURCES.get(source, source) if source else None


# Shapes of `data` per event (every key optional unless the event is meaningless without it).
_SUBSCRIPTION_KEYS = ("source_id", "status", "plan", "plan_id", "interval", "interval_count",
                      "amount", "currency", "quantity", "current_period_start",
                      "current_period_end", "next_renewal_at", "resumes_at", "trial_end",
                      "cancel_at_period_end", "canceled_at", "usage_limit", "charges_limit", "product_ids",
                      "update_payment_url", "cancellation_reason", "cancellation_comment",
                      "churn_type", "proration_amount", "renewal_skipped", "skipped_renewal_at",
                      "started_at")  # None: it ended without ever being live (never paid)
_ORDER_KEYS = ("source_id", "number", "total", "currency", "financial_status",
               "is_subscription", "placed_at", "line_items", "subscription_source_id")
# order_source_id: the store order a paid payment made (its money is counted once, by the
# payment or by the order; by the order alone when spend_from_order). per_attempt: source_id
# names one billing attempt, not the cycle (Shopify), so attempts on a subscription's unpaid
# cycle update that cycle's payment.
_PAYMENT_KEYS = ("source_id", "subscription_source_id", "status", "amount", "currency",
                 "attempt_count", "next_retry_at", "failure_reason", "decline_code",
                 "hard_decline", "due_at", "update_payment_url", "paid_at", "order_source_id",
                 "per_attempt", "spend_from_order")
_CARD_KEYS = ("source_id", "brand", "last4", "exp_month", "exp_year", "auto_updated")

EVENTS: dict[str, dict] = {
    # default_card: the id of the card the platform charges (None: none); absent when unknown.
    CUSTOMER_UPSERTED: {"data": ("default_card",)},
    CUSTOMER_DELETED: {"data": ()},
    CONSENT_CHANGED: {"data": ("channel", "state", "consented_at", "opt_in_level")},
    ORDER_PLACED: {"data": _ORDER_KEYS},
    ORDER_PAID: {"data": _ORDER_KEYS},
    # refunded_total: what the order has had back in all, where the source says so (Recharge).
    ORDER_REFUNDED: {"data": ("source_id", "order_source_id", "amount", "currency", "refunded_total")},
    ORDER_CANCELLED: {"data": _ORDER_KEYS},
    SUBSCRIPTION_UPSERTED: {"data": _SUBSCRIPTION_KEYS},
    SUBSCRIPTION_CANCELED: {"data": _SUBSCRIPTION_KEYS},
    TRIAL_ENDING: {"data": _SUBSCRIPTION_KEYS},
    PAYMENT_SUCCEEDED: {"data": _PAYMENT_KEYS},
    PAYMENT_FAILED: {"data": _PAYMENT_KEYS},
    PAYMENT_ACTION_REQUIRED: {"data": _PAYMENT_KEYS},
    PAYMENT_CLOSED: {"data": _PAYMENT_KEYS},
    # priced_as_subscription: the renewal bills the subscription's own price (a schedule that
    # no longer changes it), so what an earlier notice said it would charge no longer holds.
    RENEWAL_UPCOMING: {"data": ("subscription_source_id", "renewal_at", "amount", "currency",
                                "priced_as_subscription")},
    PAYMENT_METHOD_EXPIRING: {"data": _CARD_KEYS},
    PAYMENT_METHOD_UPDATED: {"data": _CARD_KEYS},
    SUBSCRIBER_ERASE: {"data": ("shop",)},
    DATA_REQUEST: {"data": ("request_id",)},
    APP_UNINSTALLED: {"data": ("shop",)},
    INVENTORY_CHANGED: {"data": ("product_id", "variant_id", "inventory_item_id", "available")},
}

# shopify_customer_id: the Shopify customer a subscription app's customer is (Recharge's
# external_customer_id.ecommerce), so its events can find the person Shopify already made.
CUSTOMER_KEYS = ("source_id", "email", "phone", "first_name", "last_name", "created_at",
                 "shopify_customer_id")

# Trigger names of the subscription's lifecycle moments: the contract email flows are built
# on (never rename). `churn_type` of Subscription Cancelled is one of CHURN_TYPES.
PLAN_CHANGED = "Plan Changed"
SUBSCRIPTION_PAUSED = "Subscription Paused"
SUBSCRIPTION_RESUMED = "Subscription Resumed"
RENEWAL_SKIPPED = "Renewal Skipped"
RENEW_NOW = "Renew Now"
PAYMENT_METHOD_UPDATED_TRIGGER = "Payment Method Updated"
MOMENT_TRIGGERS = (PLAN_CHANGED, SUBSCRIPTION_PAUSED, SUBSCRIPTION_RESUMED, RENEWAL_SKIPPED, RENEW_NOW,
                   PAYMENT_METHOD_UPDATED_TRIGGER)
INVOLUNTARY, VOLUNTARY = "involuntary", "voluntary"
CHURN_TYPES = (INVOLUNTARY, VOLUNTARY)

# Lifecycle stages, in the order a subscriber usually passes them (rules.yaml names them).
STAGES = ("new", "engaged", "loyal", "at_risk", "churned")


@dataclass
class CanonicalEvent:
    """One fact from a source, in the hub's vocabulary.

    `occurred_at` is the source object's own updated-at (or the event's creation
    time): the model never lets an older one overwrite a newer one.
    """

    name: str
    source: str
    occurred_at: datetime
    customer: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in EVENTS:
            raise ValueError(f"unknown canonical event {self.name!r}")
        unknown = set(self.customer) - set(CUSTOMER_KEYS)
        if unknown:
            raise ValueError(f"{self.name}: unknown customer keys {sorted(unknown)}")
        allowed = EVENTS[self.name]["data"]
        unknown = set(self.data) - set(allowed)
        if allowed and unknown:
            raise ValueError(f"{self.name}: unknown data keys {sorted(unknown)}")
        self.occurred_at = utc(self.occurred_at)
        if self.occurred_at is None:
            raise ValueError(f"{self.name}: occurred_at is required")

    def to_dict(self) -> dict:
        """JSON-safe form, for the timeline and for Redis."""
        return {"name": self.name, "source": self.source, "occurred_at": iso(self.occurred_at),
                "customer": _jsonable(self.customer), "data": _jsonable(self.data)}


def _jsonable(value):
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

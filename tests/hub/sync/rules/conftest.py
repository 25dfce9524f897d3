"""Builders for the pure rule tests: plain states, a `now`, the shipped parameters."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
import yaml

from hub.sync.rules import params as params_
from hub.sync.rules.state import PaymentState, SubscriberState, SubState, Window
from tests.postgres import postgres_url

DEFAULTS = yaml.safe_load(params_.DEFAULT_PATH.read_text())


def at(text: str) -> datetime:
    """A UTC instant from ISO text; a bare date means midnight UTC."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def tweak(**dotted) -> params_.RuleParams:
    """The shipped parameters with some keys changed: tweak(**{"dunning.mode": "orchestrate"})."""
    data = copy.deepcopy(DEFAULTS)
    for path, value in dotted.items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return params_.parse(data)


def day(text: str, tz=timezone.utc) -> Window:
    """A one-day window on the shop's calendar."""
    d = datetime.fromisoformat(text).date()
    return Window(d, d, tz)


def sub(**kw) -> SubState:
    base = dict(id=1, subscriber_id=1, source="stripe", source_id="sub_1", status="active",
                plan="Coffee Monthly", plan_id="price_1", interval="month", interval_count=1,
                amount=2500, currency="USD", started_at=at("2026-01-01"))
    return SubState(**{**base, **kw})


def payment(**kw) -> PaymentState:
    base = dict(id=1, subscriber_id=1, source="stripe", source_id="in_1", status="failed",
                amount=2500, currency="USD", attempt_count=1, first_failed_at=at("2026-03-10T09:00"),
                update_payment_url="https://billing.example/update", subscription_source_id="sub_1",
                subscription_status="past_due", plan="Coffee Monthly")
    return PaymentState(**{**base, **kw})


def subscriber(**kw) -> SubscriberState:
    base = dict(id=1, first_seen_at=at("2025-01-01"))
    return SubscriberState(**{**base, **kw})


@pytest.fixture
def p() -> params_.RuleParams:
    return params_.load()


_OPEN: list = []


@pytest.fixture(autouse=True)
def _close_worlds():
    yield
    while _OPEN:
        _OPEN.pop().storage.dispose()


class World:
    """A real SQLite database driven like the worker does: apply an event, then the rules."""

    def __init__(self, tmp_path, params=None):
        from hub.db.engine import Storage
        from hub.models import Base

        # HUB_TEST_POSTGRES_URL runs the same tests on PostgreSQL (the database is emptied).
        url = postgres_url() or "sqlite:///" + str(tmp_path / "hub.db")
        self.storage = Storage(url)
        Base.metadata.drop_all(self.storage.engine)
        Base.metadata.create_all(self.storage.engine)
        self.p = params or params_.load()
        # The hub's settings the rules' platform calls use (links, retries); None makes none.
        self.settings = None
        _OPEN.append(self)

    def emit(self, name, when, data, email="ann@example.com", source="stripe", history=False):
        """Apply one canonical event at `when`; the names of the triggers it fired."""
        from hub.events import CanonicalEvent

        customer = {"source_id": "cus_" + email.split("@")[0], "email": email}
        return self.receive(CanonicalEvent(name, source, at(when), customer=customer, data=data),
                            history=history)

    def receive(self, event, history=False):
        """Apply one canonical event (as a normalizer made it) at its own time; the names of
        the triggers it fired."""
        from hub.sync import rules
        from hub.sync.apply import apply_event

        when = event.occurred_at
        with self.storage.session() as session:
            changes = apply_event(session, event)
            session.flush()
            fired = rules.on_event(session, changes.subscriber, event, changes, when,
                                   history=history, params=self.p, settings=self.settings)
            return [t.name for t in fired]

    def sweep(self, when):
        """A sweep as the sweep job makes it: committed, then its orchestrated retries asked."""
        from hub.sync import retries, rules

        with self.storage.session() as session:
            fired = {k: v for k, v in rules.sweep(session, self.settings, at(when), params=self.p).items() if v}
        retries.ask_due(self.storage, self.settings, at(when))
        return fired

    def triggers(self, **where):
        from sqlalchemy import select

        from hub.models import Trigger

        with self.storage.session() as session:
            rows = session.scalars(select(Trigger).filter_by(**where).order_by(Trigger.id)).all()
            return [(t.name, t.rule, t.occasion, t.status) for t in rows]

    def subscriber(self, email="ann@example.com"):
        from sqlalchemy import select

        from hub.models import Subscriber

        with self.storage.session() as session:
            return session.scalar(select(Subscriber).where(Subscriber.email == email))


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def monthly(source_id="sub_1", start="2026-01-01T10:00", renews="2026-02-01T10:00", **kw):
    """Data of a subscription.upserted event for a monthly plan."""
    return {"source_id": source_id, "status": "active", "plan": "Coffee Monthly", "interval": "month",
            "interval_count": 1, "amount": 2500, "currency": "USD", "current_period_start": at(start),
            "next_renewal_at": at(renews) if renews else None, **kw}


def shopify_billing_failure(client, hub, admin, token: str, **failure_headers) -> None:
    """Point the hub at the Shopify stand-in, then post a contract and a failed billing attempt on it."""
    from tests.samples import SAMPLE_CONTRACT, load_sample, post

    hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
    hub.settings.SHOPIFY_ACCESS_TOKEN = token
    hub.settings.SHOPIFY_ADMIN_URL = admin.url
    hub.settings.SHOPIFY_OWNS_CONTRACTS = True
    admin.hold(SAMPLE_CONTRACT)
    post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
         topic="subscription_contracts/create", webhook_id="wh-c1")
    failure = load_sample("shopify/subscription_billing_attempts_failure.json")
    failure.update(subscription_contract_id=402440842,
                   admin_graphql_api_subscription_contract_id="gid://shopify/SubscriptionContract/402440842")
    post(client, "shopify", failure, topic="subscription_billing_attempts/failure", webhook_id="wh-f1",
         **failure_headers)


def failed_invoice(event_id="evt_fail_1"):
    """Stripe's invoice.payment_failed sample, as a webhook (customer cus_1234)."""
    from tests.samples import load_sample, stripe_event

    obj = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    return stripe_event("invoice.payment_failed", obj, event_id=event_id, created=obj["created"] + 60)

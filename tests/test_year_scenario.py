"""A year of four subscribers through the real webhook endpoints on a simulated calendar.

Every simulated day runs the time-rule sweep at 06:00 (`hub sweep --at`, the same function:
hub.jobs.run_time_rules), then that day's webhooks at 10:00: signed Stripe events (objects
in the shapes of tests/fixtures/stripe) and signed Shopify webhooks whose contracts
the worker fetches from the Admin API stand-in. At the end the exact list of triggers of
each subscriber is asserted: none missing, none extra, none twice.

- Ann (Stripe): monthly, one failed renewal recovered after 4 days, then a plan change to yearly.
- Ben (Stripe): monthly, a failed renewal never recovered; Stripe cancels after 21 days.
- Cara (Stripe): monthly, a hard decline (stolen card), she cancels, and comes back 20 days later.
- Dan (Shopify contract): monthly, one renewal skipped, then cancelled.
- Eve (Stripe): pauses for July and August, resumes, then sets her subscription to end at the
  period's end (Renew Now) and lets it end.

SQLite only (a year of sweeps takes a few seconds there).
"""
from __future__ import annotations

import copy
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from hub.jobs import run_time_rules
from hub.models import Subscriber, Trigger
from hub.sync.inbox import drain_inbox
from standins.shopify import FakeShopifyAdmin
from tests.samples import load_sample, post, stripe_event, stripe_resource

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

UTC = timezone.utc
YEAR = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]


def at(day: str, hour: int = 10) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(hour), tzinfo=UTC)


def ts(when: datetime) -> int:
    return int(when.timestamp())


def add_months(day: str, months: int) -> str:
    d = date.fromisoformat(day)
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1).isoformat()


# --- Stripe objects, from the published samples ----------------------------------------------

PRICES = {"monthly": ("price_coffee_m", "Coffee Monthly", 2500, "month"),
          "yearly": ("price_coffee_y", "Coffee Yearly", 48000, "year")}


def subscription(sid, customer, start, period_start, plan="monthly", status="active", canceled_at=None,
                 cancellation_details=None):
    obj = copy.deepcopy(load_sample("shared:stripe/pay/subscription.created.json")["object"])
    price_id, nickname, amount, interval = PRICES[plan]
    period_end = add_months(period_start, 12 if plan == "yearly" else 1)
    price = {**obj["items"]["data"][0]["price"], "id": price_id, "nickname": nickname, "unit_amount": amount,
             "amount": amount, "currency": "usd", "product": "prod_coffee",
             "recurring": {"interval": interval, "interval_count": 1}}
    item = {**obj["items"]["data"][0], "id": f"si_{sid}", "price": price, "quantity": 1, "subscription": sid,
            "current_period_start": ts(at(period_start)), "current_period_end": ts(at(period_end))}
    for legacy in ("price", "plan", "quantity", "current_period_start", "current_period_end"):
        obj.pop(legacy, None)
    obj.update(id=sid, customer=customer, status=status, created=ts(at(start)), start_date=ts(at(start)),
               billing_cycle_anchor=ts(at(start)), trial_start=None, trial_end=None, cancel_at_period_end=False,
               canceled_at=ts(at(canceled_at)) if canceled_at else None,
               ended_at=ts(at(canceled_at)) if canceled_at else None,
               cancellation_details=cancellation_details)
    obj["items"] = {**obj["items"], "data": [item], "total_count": 1}
    return obj


def invoice(iid, customer, email, sid, day, amount=2500, paid=True, decline=None, paid_day=None,
            attempt=1, next_attempt=None):
    """A renewal invoice; unpaid, it names Stripe's next retry (next_payment_attempt, 09:00 on
    `next_attempt`), null once Stripe will not try again."""
    obj = copy.deepcopy(load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"])
    obj.update(id=iid, customer=customer, customer_email=email, customer_name=None, currency="usd",
               amount_due=amount, amount_paid=amount if paid else 0, amount_remaining=0 if paid else amount,
               created=ts(at(day, 9)), attempt_count=attempt,
               next_payment_attempt=ts(at(next_attempt, 9)) if next_attempt and not paid else None,
               status="paid" if paid else "open", hosted_invoice_url=f"https://invoice.stripe.com/i/{iid}",
               status_transitions={**obj.get("status_transitions", {}),
                                   "paid_at": ts(at(paid_day or day)) if paid else None})
    obj["parent"] = {"type": "subscription_details", "quote_details": None,
                     "subscription_details": {"metadata": {}, "subscription": sid}}
    if decline:
        obj["payment_intent"] = {"id": f"pi_{iid}", "object": "payment_intent", "last_payment_error": {
            "type": "card_error", "code": "card_declined", "decline_code": decline,
            "message": "Your card was declined."}}
    return obj


class Calendar:
    """Webhooks planned by simulated day; `run()` sweeps every morning and posts them."""

    def __init__(self, client, hub, admin):
        self.client, self.hub, self.admin = client, hub, admin
        self.plan: dict[str, list] = {}
        self.n = 0

    def on(self, day: str, action) -> None:
        self.plan.setdefault(day, []).append(action)

    # Stripe
    def stripe(self, day, event_type, obj, hour=10):
        def send():
            self.n += 1
            event = stripe_event(event_type, obj, event_id=f"evt_{self.n:04d}", created=ts(at(day, hour)))
            assert post(self.client, "stripe", event).status_code == 200
            self.last = event
        self.on(day, send)

    def customer(self, day, cid, email, name):
        obj = {**stripe_resource("customer"), "id": cid, "email": email, "name": name, "created": ts(at(day, 9))}
        self.stripe(day, "customer.created", obj, hour=9)

    def resend_last(self, day):
        """Stripe delivers the same event again (a retry after a slow answer)."""
        self.on(day, lambda: post(self.client, "stripe", self.last))

    # Shopify
    def contract(self, day, topic, gid, next_billing, status="ACTIVE"):
        def send():
            self.n += 1
            self.admin.hold(
                gid, status=status, nextBillingDate=f"{next_billing}T10:00:00Z", updatedAt=f"{day}T10:00:00Z",
                currencyCode="USD", billingPolicy={"interval": "MONTH", "intervalCount": 1},
                customer={"id": "gid://shopify/Customer/7", "email": "dan@example.com", "firstName": "Dan",
                          "lastName": "Dune", "phone": None})
            sample = load_sample(f"shopify/{topic.replace('/', '_')}.json")
            if topic.startswith("subscription_billing_attempts/"):
                payload = {**sample, "id": 9000 + self.n, "admin_graphql_api_id":
                           f"gid://shopify/SubscriptionBillingAttempt/{9000 + self.n}", "error_message": None,
                           "error_code": None, "subscription_contract_id": int(gid.rsplit("/", 1)[1]),
                           "admin_graphql_api_subscription_contract_id": gid, "order_id": 5000 + self.n}
            else:
                payload = {**sample, "id": int(gid.rsplit("/", 1)[1]), "admin_graphql_api_id": gid,
                           "status": status.lower()}
            response = post(self.client, "shopify", payload, topic=topic, webhook_id=f"wh-{self.n}",
                            triggered_at=f"{day}T10:00:00Z")
            assert response.status_code == 200
        self.on(day, send)

    def run(self, days):
        for day in days:
            for _ in range(2 if day.day == 1 else 1):  # the 1st of each month: swept twice
                run_time_rules(self.hub, datetime.combine(day, time(6), tzinfo=UTC))
            for action in self.plan.pop(day.isoformat(), []):
                action()
                drain_inbox(self.hub.storage, self.hub.settings)
        assert self.plan == {}, "webhooks planned outside the simulated year"


def ann(cal):
    c, e = "cus_ann", "ann@example.com"
    cal.customer("2026-01-01", c, e, "Ann Archer")
    cal.stripe("2026-01-01", "customer.subscription.created", subscription("sub_ann", c, "2026-01-01", "2026-01-01"))
    cal.stripe("2026-01-01", "invoice.paid", invoice("in_ann_01", c, e, "sub_ann", "2026-01-01"))
    for month in ("2026-02-01", "2026-03-01", "2026-05-01"):
        cal.stripe(month, "customer.subscription.updated", subscription("sub_ann", c, "2026-01-01", month))
        cal.stripe(month, "invoice.paid", invoice(f"in_ann_{month[5:7]}", c, e, "sub_ann", month))
    # April: the renewal fails (insufficient funds), Stripe's retry on day 4 succeeds.
    cal.stripe("2026-04-01", "customer.subscription.updated",
               subscription("sub_ann", c, "2026-01-01", "2026-04-01", status="past_due"))
    cal.stripe("2026-04-01", "invoice.payment_failed",
               invoice("in_ann_04", c, e, "sub_ann", "2026-04-01", paid=False, decline="insufficient_funds",
                       next_attempt="2026-04-05"))
    cal.stripe("2026-04-05", "invoice.paid", invoice("in_ann_04", c, e, "sub_ann", "2026-04-01", paid_day="2026-04-05"))
    cal.resend_last("2026-04-05")
    cal.stripe("2026-04-05", "customer.subscription.updated", subscription("sub_ann", c, "2026-01-01", "2026-04-01"))
    # June: she moves to the yearly plan (renews 2027-06-01, past the simulated year).
    cal.stripe("2026-06-01", "customer.subscription.updated",
               subscription("sub_ann", c, "2026-01-01", "2026-06-01", plan="yearly"))
    cal.stripe("2026-06-01", "invoice.paid", invoice("in_ann_06", c, e, "sub_ann", "2026-06-01", amount=48000))


def ben(cal):
    c, e = "cus_ben", "ben@example.com"
    cal.customer("2026-02-10", c, e, "Ben Baker")
    cal.stripe("2026-02-10", "customer.subscription.created", subscription("sub_ben", c, "2026-02-10", "2026-02-10"))
    cal.stripe("2026-02-10", "invoice.paid", invoice("in_ben_02", c, e, "sub_ben", "2026-02-10"))
    cal.stripe("2026-03-10", "customer.subscription.updated", subscription("sub_ben", c, "2026-02-10", "2026-03-10"))
    cal.stripe("2026-03-10", "invoice.paid", invoice("in_ben_03", c, e, "sub_ben", "2026-03-10"))
    cal.stripe("2026-04-10", "customer.subscription.updated",
               subscription("sub_ben", c, "2026-02-10", "2026-04-10", status="past_due"))
    # Stripe's own retries all fail (each failure names the next; the last, none); its
    # settings cancel the subscription 21 days after the first failure.
    for attempt, (failed_on, next_attempt) in enumerate(
            [("2026-04-10", "2026-04-13"), ("2026-04-13", "2026-04-17"), ("2026-04-17", "2026-04-24"),
             ("2026-04-24", None)], 1):
        cal.stripe(failed_on, "invoice.payment_failed",
                   invoice("in_ben_04", c, e, "sub_ben", "2026-04-10", paid=False, decline="do_not_honor",
                           attempt=attempt, next_attempt=next_attempt))
    # Mid-dunning he adds a new card; Stripe's next retry (April 17) still fails.
    card = copy.deepcopy(load_sample("shared:stripe/pay/payment_method.attached.json")["object"])
    card.update(id="pm_ben_new", customer=c)
    card["card"].update(exp_month=4, exp_year=2029)
    cal.stripe("2026-04-15", "payment_method.attached", card)
    cal.stripe("2026-05-01", "customer.subscription.deleted",
               subscription("sub_ben", c, "2026-02-10", "2026-04-10", status="canceled", canceled_at="2026-05-01",
                            cancellation_details={"reason": "payment_failed", "feedback": None, "comment": None}))


def cara(cal):
    c, e = "cus_cara", "cara@example.com"
    cal.customer("2026-03-05", c, e, "Cara Cole")
    cal.stripe("2026-03-05", "customer.subscription.created", subscription("sub_cara", c, "2026-03-05", "2026-03-05"))
    cal.stripe("2026-03-05", "invoice.paid", invoice("in_cara_03", c, e, "sub_cara", "2026-03-05"))
    cal.stripe("2026-04-05", "customer.subscription.updated", subscription("sub_cara", c, "2026-03-05", "2026-04-05"))
    cal.stripe("2026-04-05", "invoice.paid", invoice("in_cara_04", c, e, "sub_cara", "2026-04-05"))
    cal.stripe("2026-05-05", "customer.subscription.updated",
               subscription("sub_cara", c, "2026-03-05", "2026-05-05", status="past_due"))
    cal.stripe("2026-05-05", "invoice.payment_failed",
               invoice("in_cara_05", c, e, "sub_cara", "2026-05-05", paid=False, decline="stolen_card"))
    # A stolen card: Stripe schedules no retry (next_payment_attempt null).
    cal.stripe("2026-05-12", "customer.subscription.deleted",
               subscription("sub_cara", c, "2026-03-05", "2026-05-05", status="canceled", canceled_at="2026-05-12",
                            cancellation_details={"reason": "cancellation_requested", "feedback": "other",
                                                  "comment": "Card stolen, done for now"}))
    # She comes back on a new subscription 20 days later: no Win Back.
    cal.stripe("2026-06-01", "customer.subscription.created", subscription("sub_cara2", c, "2026-06-01", "2026-06-01"))
    cal.stripe("2026-06-01", "invoice.paid", invoice("in_cara2_06", c, e, "sub_cara2", "2026-06-01"))
    for month in ("2026-07-01", "2026-08-01", "2026-09-01"):
        cal.stripe(month, "customer.subscription.updated", subscription("sub_cara2", c, "2026-06-01", month))
        cal.stripe(month, "invoice.paid", invoice(f"in_cara2_{month[5:7]}", c, e, "sub_cara2", month))


def eve(cal):
    """Eve (Stripe): pauses in July until September, then sets her subscription to end at the
    period's end and lets it end."""
    c, e = "cus_eve", "eve@example.com"
    cal.customer("2026-07-01", c, e, "Eve Evans")
    cal.stripe("2026-07-01", "customer.subscription.created", subscription("sub_eve", c, "2026-07-01", "2026-07-01"))
    cal.stripe("2026-07-01", "invoice.paid", invoice("in_eve_07", c, e, "sub_eve", "2026-07-01"))
    paused = subscription("sub_eve", c, "2026-07-01", "2026-07-01")
    paused["pause_collection"] = {"behavior": "void", "resumes_at": ts(at("2026-09-01", 0))}
    cal.stripe("2026-07-10", "customer.subscription.updated", paused)
    cal.stripe("2026-09-01", "customer.subscription.updated", subscription("sub_eve", c, "2026-07-01", "2026-09-01"))
    cal.stripe("2026-09-01", "invoice.paid", invoice("in_eve_09", c, e, "sub_eve", "2026-09-01"))
    ending = subscription("sub_eve", c, "2026-07-01", "2026-09-01")
    ending["cancel_at_period_end"] = True
    cal.stripe("2026-09-20", "customer.subscription.updated", ending)
    cal.stripe("2026-10-01", "customer.subscription.deleted", subscription(
        "sub_eve", c, "2026-07-01", "2026-09-01", status="canceled", canceled_at="2026-10-01",
        cancellation_details={"reason": "cancellation_requested", "feedback": "unused", "comment": None}))


def dan(cal):
    gid = "gid://shopify/SubscriptionContract/77"
    cal.contract("2026-01-15", "subscription_contracts/create", gid, "2026-02-15")
    cal.contract("2026-02-15", "subscription_billing_attempts/success", gid, "2026-03-15")
    # He skips the March shipment: the next billing moves to April 15.
    cal.contract("2026-03-03", "subscription_contracts/update", gid, "2026-04-15")
    cal.contract("2026-04-15", "subscription_billing_attempts/success", gid, "2026-05-15")
    cal.contract("2026-05-15", "subscription_billing_attempts/success", gid, "2026-06-15")
    cal.contract("2026-06-20", "subscription_contracts/cancel", gid, "2026-07-15", status="CANCELLED")


def triggers_by_person(hub) -> dict[str, list[tuple[str, str, str]]]:
    with hub.storage.session() as s:
        emails = dict(s.execute(select(Subscriber.id, Subscriber.email)).all())
        rows = s.scalars(select(Trigger).order_by(Trigger.due_at, Trigger.id)).all()
        out: dict[str, list] = {}
        for t in rows:
            out.setdefault(emails[t.subscriber_id].split("@")[0], []).append(
                (t.due_at.astimezone(UTC).date().isoformat(), t.name, t.occasion, t.status))
        return out


@pytest.fixture
def year(client, hub):
    with FakeShopifyAdmin(token="shpat_year", owns_contracts=True) as admin:
        hub.settings.SHOPIFY_SHOP = "year.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_year"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        cal = Calendar(client, hub, admin)
        for person in (ann, ben, cara, dan, eve):
            person(cal)
        cal.run(YEAR)
    return triggers_by_person(hub)


def reminders(renewal: str, ref: str, statuses=("fired",) * 3):
    """Renewal Reminder 14, 7 and 1 days before a monthly renewal (30 is not shorter than a month)."""
    d = date.fromisoformat(renewal)
    return [((d - timedelta(days=n)).isoformat(), "Renewal Reminder", f"{renewal}/{ref}", status)
            for n, status in zip((14, 7, 1), statuses)]


def welcome(start: str, ref: str):
    d = date.fromisoformat(start)
    return [(start, "Subscription Started", ref, "fired")] + [
        ((d + timedelta(days=n)).isoformat(), "Welcome Step", "first-subscription", "fired") for n in (0, 2, 5)]


def dunning(failed: str, ref: str, retries: list[tuple[int, str]]):
    """Payment Failed, then for each retry Stripe announced, (retry number, day) while it was
    the next one: a Payment Reminder 3 days before (not on the failure day) and on it, and
    Payment Retry Scheduled on it (the sweep runs at 06:00, before that day's webhooks)."""
    d0 = date.fromisoformat(failed)
    out = [(failed, "Payment Failed", ref, "fired")]
    for n, day in retries:
        before = (date.fromisoformat(day) - timedelta(days=3))
        if before > d0:
            out.append((before.isoformat(), "Payment Reminder", f"{ref}/retry-{n}/-3d", "fired"))
        out += [(day, "Payment Reminder", f"{ref}/retry-{n}/+0d", "fired"),
                (day, "Payment Retry Scheduled", f"{ref}/retry-{n}", "fired")]
    return out


def stage(day: str, hour: int, move: str):
    return (day, "Stage Changed", f"{move}/{day}T{hour:02d}:00:00+00:00", "fired")


def upsell(day: str, cycle: str, ref: str):
    return (day, "Upsell Opportunity", f"{cycle}/{ref}", "fired")


EXPECTED = {
    "ann": [
        *welcome("2026-01-01", "stripe:sub_ann"),
        *[r for month in ("2026-02-01", "2026-03-01", "2026-04-01", "2026-05-01", "2026-06-01")
          for r in reminders(month, "stripe:sub_ann")],
        stage("2026-01-31", 6, "new->engaged"),                    # 30 days a customer
        upsell("2026-02-01", "2026-02-01", "stripe:sub_ann"),      # engaged, just renewed
        upsell("2026-03-01", "2026-03-01", "stripe:sub_ann"),
        # April: failed, Stripe's retry went through on day 4 (recovered within 21 days).
        *dunning("2026-04-01", "stripe:in_ann_04", [(1, "2026-04-05")]),
        stage("2026-04-01", 10, "engaged->at_risk"),
        ("2026-04-05", "Payment Recovered", "stripe:in_ann_04", "fired"),
        stage("2026-04-05", 10, "at_risk->engaged"),
        upsell("2026-04-05", "2026-04-01", "stripe:sub_ann"),      # the April cycle's, once paid
        upsell("2026-05-01", "2026-05-01", "stripe:sub_ann"),
        # June: yearly plan (next renewal 2027-06-01: its reminders fall outside the year).
        upsell("2026-06-01", "2026-06-01", "stripe:sub_ann"),
        ("2026-06-01", "Plan Changed", "2026-06-01T10:00:00+00:00/stripe:sub_ann", "fired"),
        ("2026-06-01", "Tier Changed", "Bronze->Silver/2026-06-01T10:00:00+00:00", "fired"),  # 125 + 480 points
        stage("2026-06-30", 6, "engaged->loyal"),                  # 180 days, healthy
    ],
    "ben": [
        *welcome("2026-02-10", "stripe:sub_ben"),
        *reminders("2026-03-10", "stripe:sub_ben"),
        stage("2026-03-12", 6, "new->engaged"),
        upsell("2026-03-12", "2026-03-10", "stripe:sub_ben"),      # within 7 days of the renewal
        *reminders("2026-04-10", "stripe:sub_ben"),
        # Never paid: each retry Stripe announced, with its reminders, until it gave up on April 24.
        *dunning("2026-04-10", "stripe:in_ben_04", [(1, "2026-04-13"), (2, "2026-04-17"), (3, "2026-04-24")]),
        stage("2026-04-10", 10, "engaged->at_risk"),
        ("2026-04-15", "Payment Method Updated", "stripe:pm_ben_new/2029-4", "fired"),
        ("2026-05-01", "Subscription Cancelled", "2026-05-01/stripe:sub_ben", "fired"),
        stage("2026-05-01", 10, "at_risk->churned"),
        ("2026-05-31", "Win Back", "2026-05-01/stripe:sub_ben", "fired"),
    ],
    "cara": [
        *welcome("2026-03-05", "stripe:sub_cara"),
        *reminders("2026-04-05", "stripe:sub_cara"),
        stage("2026-04-04", 6, "new->engaged"),
        upsell("2026-04-05", "2026-04-05", "stripe:sub_cara"),
        *reminders("2026-05-05", "stripe:sub_cara"),
        # Stolen card: Stripe will not retry, so Payment Failed (asking for a new card) ends dunning.
        *dunning("2026-05-05", "stripe:in_cara_05", []),
        stage("2026-05-05", 10, "engaged->at_risk"),
        ("2026-05-12", "Subscription Cancelled", "2026-05-12/stripe:sub_cara", "fired"),
        stage("2026-05-12", 10, "at_risk->churned"),
        # Back on June 1 (no second welcome); the Win Back due June 11 is kept, not sent.
        ("2026-06-01", "Subscription Started", "stripe:sub_cara2", "fired"),
        stage("2026-06-01", 10, "churned->engaged"),
        ("2026-06-11", "Win Back", "2026-05-12/stripe:sub_cara", "skipped"),
        *[r for month in ("2026-07-01", "2026-08-01", "2026-09-01", "2026-10-01")
          for r in reminders(month, "stripe:sub_cara2")],
        upsell("2026-07-01", "2026-07-01", "stripe:sub_cara2"),
        upsell("2026-08-01", "2026-08-01", "stripe:sub_cara2"),
        upsell("2026-09-01", "2026-09-01", "stripe:sub_cara2"),
        stage("2026-09-01", 6, "engaged->loyal"),                  # 180 days since March 5
    ],
    "dan": [
        *welcome("2026-01-15", "shopify:77"),
        *reminders("2026-02-15", "shopify:77"),
        stage("2026-02-14", 6, "new->engaged"),
        upsell("2026-02-15", "2026-02-15", "shopify:77"),
        # Skipped on March 3: the 14-day reminder had gone; the other two are cancelled.
        *reminders("2026-03-15", "shopify:77", statuses=("fired", "cancelled", "cancelled")),
        *reminders("2026-04-15", "shopify:77"),
        upsell("2026-04-15", "2026-04-15", "shopify:77"),
        *reminders("2026-05-15", "shopify:77"),
        upsell("2026-05-15", "2026-05-15", "shopify:77"),
        *reminders("2026-06-15", "shopify:77"),
        ("2026-06-20", "Subscription Cancelled", "2026-06-20/shopify:77", "fired"),
        stage("2026-06-20", 10, "engaged->churned"),
        ("2026-07-20", "Win Back", "2026-06-20/shopify:77", "fired"),
    ],
    "eve": [
        *welcome("2026-07-01", "stripe:sub_eve"),
        # Paused from July 10 until September 1: no reminders for the August renewal; those of
        # September 1, the first renewal Stripe collects again, come while she is paused.
        ("2026-07-10", "Subscription Paused", "2026-07-10T10:00:00+00:00/stripe:sub_eve", "fired"),
        stage("2026-07-31", 6, "new->engaged"),
        stage("2026-08-15", 6, "engaged->at_risk"),                # 45 days silent, nothing running
        *reminders("2026-09-01", "stripe:sub_eve"),
        ("2026-09-01", "Subscription Resumed", "2026-09-01T10:00:00+00:00/stripe:sub_eve", "fired"),
        stage("2026-09-01", 10, "at_risk->engaged"),
        upsell("2026-09-01", "2026-09-01", "stripe:sub_eve"),
        # Set to end on October 1 on September 20: the renewal's last reminders are cancelled,
        # Renew Now takes their days.
        *reminders("2026-10-01", "stripe:sub_eve", ("fired", "cancelled", "cancelled")),
        stage("2026-09-20", 10, "engaged->at_risk"),               # cancel at period end set
        ("2026-09-24", "Renew Now", "2026-10-01/stripe:sub_eve", "fired"),
        ("2026-09-30", "Renew Now", "2026-10-01/stripe:sub_eve", "fired"),
        ("2026-10-01", "Subscription Cancelled", "2026-10-01/stripe:sub_eve", "fired"),
        stage("2026-10-01", 10, "at_risk->churned"),
        ("2026-10-31", "Win Back", "2026-10-01/stripe:sub_eve", "fired"),
    ],
}


def test_a_year_fires_exactly_the_expected_triggers_carrying_what_flows_need(year, hub):
    # One test: the year takes long to play, and is played once.
    expected_triggers_fired(year)
    plan_change_and_cancellations_carry_what_flows_need(hub)


def expected_triggers_fired(year):
    assert set(year) == set(EXPECTED)
    for who, expected in EXPECTED.items():
        got = year[who]
        assert [k for k, n in Counter(got).items() if n > 1] == [], f"{who}: a trigger stored twice"
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        assert (who, missing, extra) == (who, [], [])
        assert len(got) == len(expected)


def properties_of(hub, name: str) -> dict[str, dict]:
    with hub.storage.session() as s:
        emails = dict(s.execute(select(Subscriber.id, Subscriber.email)).all())
        return {emails[t.subscriber_id].split("@")[0]: t.properties
                for t in s.scalars(select(Trigger).where(Trigger.name == name))}


def plan_change_and_cancellations_carry_what_flows_need(hub):
    plan = properties_of(hub, "Plan Changed")["ann"]
    assert {k: plan[k] for k in ("previous_plan", "plan", "previous_amount", "amount", "currency", "direction",
                                 "effective_at", "proration_amount")} == {
        "previous_plan": "Coffee Monthly", "plan": "Coffee Yearly", "previous_amount": 2500, "amount": 48000,
        "currency": "USD", "direction": "upgrade",  # 40.00 a month against 25.00
        "effective_at": "2026-06-01T10:00:00+00:00", "proration_amount": None}
    cancelled = properties_of(hub, "Subscription Cancelled")
    why = {who: (p["cancellation_reason"], p["churn_type"]) for who, p in cancelled.items()}
    assert why == {"ben": ("payment_failed", "involuntary"), "cara": ("other", "voluntary"),
                   "dan": (None, "voluntary"), "eve": ("unused", "voluntary")}
    paused = properties_of(hub, "Subscription Paused")["eve"]
    resumed = properties_of(hub, "Subscription Resumed")["eve"]
    assert (paused["resumes_at"], paused["status"]) == ("2026-09-01T00:00:00+00:00", "paused")
    assert (resumed["status"], resumed["next_renewal_at"]) == ("active", "2026-10-01T10:00:00+00:00")
    card = properties_of(hub, "Payment Method Updated")["ben"]
    assert (card["card_id"], card["last4"], card["exp_year"], card["dunning_payment_id"]) == (
        "pm_ben_new", "4242", 2029, "in_ben_04")
    with hub.storage.session() as s:
        renew = [t.properties for t in s.scalars(select(Trigger).where(Trigger.name == "Renew Now")
                                                 .order_by(Trigger.id))]
    assert [(r["days_before"], r["end_date"], r["ends_at"]) for r in renew] == [
        (7, "2026-10-01", "2026-10-01T10:00:00+00:00"), (1, "2026-10-01", "2026-10-01T10:00:00+00:00")]

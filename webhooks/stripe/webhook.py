"""Stripe webhooks: signature check, envelope, and normalizers into canonical events (design §4).

A Stripe event carries the whole object in `data.object`, as of the account's API version:
the normalizers read the shapes before and after 2025-03-31 ("basil"). Stripe objects have
no updated-at, so every canonical event takes the event's `created` as `occurred_at`: that
is what keeps an older delivery (retries, no ordering) from overwriting a newer one.
"""
from __future__ import annotations

import time
from datetime import datetime

import stripe

from hub import events as ev
from hub.errors import RetryLater, SignatureInvalid, SourceNotConfigured
from hub.events import CanonicalEvent
from hub.values import (
    add_intervals,
    asks_again,
    json_value,
    normalize_email,
    normalize_phone,
    per_month,
    readable_utc,
    utc,
)
from webhooks.envelope import UNREADABLE, Envelope, body_hash_id, text_or_none
from webhooks.envelope import header as find_header

NAME = "stripe"
# The API version the normalizers are written for (they read older shapes too): `hub install`
# creates the webhook endpoint on it, so events arrive in it whatever the account's default.
API_VERSION = "2025-03-31.basil"
# What verify() needs: without it every webhook is refused (named at `hub run`'s start).
SECRET_SETTINGS = ("STRIPE_WEBHOOK_SECRET",)

# Stripe's own default: a signature older than this is treated as a replay; the hub also
# refuses one dated further than this ahead of its clock.
TOLERANCE_SECONDS = 300


def verify(settings, headers, body: bytes) -> None:
    """Raise SignatureInvalid unless `body` is signed with STRIPE_WEBHOOK_SECRET, recently."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise SourceNotConfigured("stripe webhooks are not configured (set STRIPE_WEBHOOK_SECRET)")
    header = find_header(headers, "Stripe-Signature")
    if not header:
        raise SignatureInvalid("missing Stripe-Signature header")
    try:
        # The library accepts any of several v1 signatures (secret rotation) and ignores v0.
        stripe.WebhookSignature.verify_header(body.decode(), header, settings.STRIPE_WEBHOOK_SECRET,
                                              tolerance=TOLERANCE_SECONDS)
    except UnicodeDecodeError:
        raise SignatureInvalid("body is not UTF-8") from None
    except stripe.SignatureVerificationError as exc:
        # `from None`: the library's exception holds the body, which must not reach the logs.
        raise SignatureInvalid(str(exc)) from None
    # The library refuses only old timestamps (`timestamp < now - tolerance`, stripe/_webhook.py).
    # A signature is replayable while its timestamp is within the tolerance, so one dated
    # ahead (a signer's clock far off, or a header signed with a leaked secret) would stay
    # replayable until that date, days or years away. Stripe signs as it sends: a genuine
    # one is at most clock skew ahead, and the same tolerance covers that.
    if signed_at(header) > time.time() + TOLERANCE_SECONDS:
        raise SignatureInvalid("Timestamp is in the future, outside the tolerance zone")


def signed_at(header: str) -> int:
    """The `t=` of a Stripe-Signature header that verify_header has already parsed (read as the
    library reads it: the first `t`, the text up to any second `=`)."""
    return int(next(item.split("=", 2)[1] for item in header.split(",") if item.split("=", 2)[0] == "t"))


def describe(headers, body: bytes) -> Envelope:
    """The event's id (Stripe's dedupe key), type and creation time; never raises."""
    try:
        event = json_value(body)
        if not isinstance(event.get("id"), str) or not event["id"] or not isinstance(event.get("type"), str):
            raise ValueError("not a Stripe event")
    except Exception:  # anything unreadable is stored under its hash and failed when drained
        return Envelope(event_id=body_hash_id(body), topic=UNREADABLE)
    # An unreadable `created` keeps the event's own id (Stripe's retries stay duplicates);
    # the normalizer, which needs the time, fails the row.
    return Envelope(event_id=event["id"], topic=event["type"],
                    api_version=text_or_none(event.get("api_version")),
                    triggered_at=readable_utc(event.get("created")),
                    extra={"livemode": event.get("livemode")})


# --- normalizers: (payload, envelope) -> [CanonicalEvent]; payload is the whole event -------

def normalize_customer(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    customer = _object(payload)
    return [_event(ev.CUSTOMER_UPSERTED, payload, _person_of_customer(customer),
                   _default_card(customer))]


def _default_card(customer: dict) -> dict:
    """The card Stripe charges for the customer's subscriptions and invoices:
    `invoice_settings.default_payment_method`, else the legacy `default_source`
    (https://docs.stripe.com/api/customers/object#customer_object-invoice_settings-default_payment_method).
    Nothing when the object does not show its invoice settings (an older or trimmed payload):
    an unknown default is not a removed one."""
    if not isinstance(customer.get("invoice_settings"), dict):
        return {}
    default = customer["invoice_settings"].get("default_payment_method") or customer.get("default_source")
    return {"default_card": _id(default)}


def normalize_deleted_customer(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return [_event(ev.CUSTOMER_DELETED, payload, {"source_id": _id(_object(payload)["id"])})]


def normalize_checkout(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """order.placed, order.paid once paid, and consent.changed when the buyer was asked."""
    session = _object(payload)
    details = session.get("customer_details") or {}
    customer = _customer(payload, details.get("email") or session.get("customer_email"),
                         details.get("phone"), details.get("name"))
    order = {
        # Keyed by the payment intent when there is one: a refund knows only its charge's
        # payment intent, and this is how it finds its order (design §4, order.refunded).
        "source_id": _id(session.get("payment_intent")) or _id(session["id"]),
        "total": session.get("amount_total"),
        "currency": _currency(session),
        "financial_status": session.get("payment_status"),
        "is_subscription": session.get("mode") == "subscription",
        "placed_at": utc(session.get("created")) or utc(payload["created"]),
        "subscription_source_id": _id(session.get("subscription")),
    }
    events = [_event(ev.ORDER_PLACED, payload, customer, order)]
    # Not "unpaid" (a delayed method such as a bank debit) nor "no_payment_required".
    if session.get("payment_status") == "paid":
        events.append(_event(ev.ORDER_PAID, payload, customer, order))
    state = CONSENT_STATES.get((session.get("consent") or {}).get("promotions"))
    if state:  # only when Checkout asked: consent is never inferred (design §6)
        consent = {"channel": "email", "state": state, "consented_at": utc(payload["created"])}
        events.append(_event(ev.CONSENT_CHANGED, payload, customer, consent))
    return events


CONSENT_STATES = {"opt_in": "subscribed", "opt_out": "unsubscribed"}


def normalize_refund(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    charge = _object(payload)
    billing = charge.get("billing_details") or {}
    # Refunds are listed newest first, and only in API versions before 2022-11-15.
    latest = ((charge.get("refunds") or {}).get("data") or [{}])[0]
    data = {
        "source_id": _id(latest.get("id")) or _id(charge["id"]),
        "order_source_id": _id(charge.get("payment_intent")) or _id(charge["id"]),
        "amount": _refunded_now(payload, latest),
        "currency": _currency(charge),
    }
    # The charge's running total of refunds: what the order has given back, read as such
    # whether or not the event says what it was before (previous_attributes is documented
    # for *.updated events only, https://docs.stripe.com/api/events/object). Its refunds as
    # listed (ENRICH) say it exactly: a refund that failed gave its money back.
    total = _refunds_total(payload)
    if total is None and isinstance(charge.get("amount_refunded"), int):
        total = charge["amount_refunded"]
    if total is not None:
        data["refunded_total"] = total
    customer = _customer(payload, billing.get("email") or charge.get("receipt_email"))
    return [_event(ev.ORDER_REFUNDED, payload, customer, data)]


# A refund that failed or was canceled gave its money back: "the bank returns the refunded
# amount to us and we add it back to your Stripe account balance", and "a refund can appear
# to succeed and later fail" (https://docs.stripe.com/refunds, https://docs.stripe.com/testing);
# "cancellations are a type of refund failure" (https://docs.stripe.com/api/refunds/object).
GIVEN_BACK_AGAIN = frozenset({"failed", "canceled"})


def _refunds_total(payload: dict) -> int | None:
    """What a charge's refunds listed with it (`_refunds`, ENRICH) still give back: those not
    failed nor canceled. None when they were not listed."""
    refunds = payload.get("_refunds")
    if refunds is None:
        return None
    return sum(r.get("amount") or 0 for r in refunds if r.get("status") not in GIVEN_BACK_AGAIN)


def normalize_refund_change(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """refund.failed / refund.updated: the refunds of the refund's charge (ENRICH) give the
    charge's running total again, without the one that failed. Whether a charge's
    amount_refunded drops then is not documented; the listing does not depend on it. Without
    the listing (no API key) nothing is known to change."""
    refund = _object(payload)
    total = _refunds_total(payload)
    if total is None:
        return []
    data = {"source_id": _id(refund["id"]),
            "order_source_id": _id(refund.get("payment_intent")) or _id(refund.get("charge")),
            "refunded_total": total, "currency": _currency(refund)}
    return [_event(ev.ORDER_REFUNDED, payload, {}, data)]


def _dispute_event(withdrawn: bool):
    """charge.dispute.funds_withdrawn / funds_reinstated: "funds are removed from your account
    due to a dispute" / "reinstated to your account after a dispute is closed"
    (https://docs.stripe.com/api/events/types). A chargeback gives the money back as a refund
    does, though the charge's amount_refunded never shows it; a dispute won brings it back: an
    order.refunded of the amount withdrawn, then one of minus the amount reinstated. Each is
    keyed by the dispute and its own time, so a replay or a late delivery counts once."""
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        dispute = _object(payload)
        charge = payload.get("_charge") or {}
        moved = _dispute_money(dispute, withdrawn)
        data = {"source_id": _id(dispute["id"]),
                "order_source_id": (_id(dispute.get("payment_intent")) or _id(charge.get("payment_intent"))
                                    or _id(dispute.get("charge"))),
                "amount": moved if withdrawn else -moved, "currency": _currency(dispute)}
        # The charge's customer, fetched with it (a guest's charge names its billing email).
        own = _person(_id(charge.get("customer")), (charge.get("billing_details") or {}).get("email"))
        fetched = payload.get("_customer")
        customer = {**own, **_person_of_customer(fetched)} if fetched else own
        return [_event(ev.ORDER_REFUNDED, payload, customer, data)]
    return normalize


def _dispute_money(dispute: dict, withdrawn: bool) -> int:
    """What the dispute moved one way: its balance transactions' gross amounts (a withdrawal
    is negative, a reinstatement positive; the dispute fee is apart), in the dispute's
    currency; the disputed amount when they are in another (the account's) currency."""
    currency = (dispute.get("currency") or "").lower()
    moves = [bt.get("amount") or 0 for bt in dispute.get("balance_transactions") or []
             if isinstance(bt, dict) and (bt.get("currency") or "").lower() == currency
             and ((bt.get("amount") or 0) < 0) == withdrawn]
    return abs(sum(moves)) if moves else (dispute.get("amount") or 0)


def normalize_credit_note(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """credit_note.created / .voided: of a paid invoice's credit note, only the part "credited
    outside of Stripe" (`out_of_band_amount`, https://docs.stripe.com/api/credit_notes/create)
    is money given back that no other event tells of: its refund part is a Refund
    (charge.refunded), its credit part goes to the customer's balance, to pay their next
    invoice. A voided credit note takes back what it gave, keyed by its own time as a dispute
    won is."""
    note = _object(payload)
    outside = note.get("out_of_band_amount") or 0
    if not outside:
        return []
    data = {"source_id": _id(note["id"]), "order_source_id": _id(note.get("invoice")),
            "amount": -outside if payload["type"] == "credit_note.voided" else outside,
            "currency": _currency(note)}
    return [_event(ev.ORDER_REFUNDED, payload, _customer(payload), data)]


def _refunded_now(payload: dict, latest_refund: dict) -> int | None:
    """What this refund gave back. The hub adds each order.refunded up, while the charge's
    `amount_refunded` is the running total: a second partial refund would count the first twice."""
    total = _object(payload).get("amount_refunded")
    before = (payload["data"].get("previous_attributes") or {}).get("amount_refunded")
    if total is not None and before is not None:
        return total - before
    return latest_refund.get("amount", total)


def normalize_subscription(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    event = _subscription_event(ev.SUBSCRIPTION_UPSERTED, payload)
    # What a change of plan, price or quantity names as changed, in API versions since items
    # (2018-02-05) and before them.
    if {"items", "plan", "quantity"} & set(payload["data"].get("previous_attributes") or {}):
        amount = proration_amount(payload.get("_latest_invoice") or _object(payload).get("latest_invoice"))
        event.data["proration_amount"] = amount if amount is not None else pending_proration_amount(payload)
    # A subscription run by a schedule: what its next renewal bills when a later phase does, read
    # again with each of its changes (a phase that began moves the renewal after it into the
    # next one). A renewal in the phase under way leaves any notice of its charge as it was.
    if "_schedule" in payload:
        scheduled = normalize_schedule({**payload, "_subscription": _object(payload)}, envelope)
        return [event, *(notice for notice in scheduled if notice.data.get("amount") is not None)]
    return [event]


def pending_proration_amount(payload: dict) -> int | None:
    """The sum of the proration invoice items the change left for the next invoice (Stripe's
    default proration_behavior=create_prorations, https://docs.stripe.com/billing/subscriptions/
    prorations): items with `proration: true` of this subscription, named under
    parent.subscription_details since API 2025-03-31 and as `subscription` before
    (https://docs.stripe.com/api/invoiceitems/object). None when there were none."""
    sub_id = _object(payload).get("id")
    amounts = [item["amount"] for item in payload.get("_proration_items") or []
               if item.get("proration") and item.get("amount") is not None
               and sub_id in (item.get("subscription"),
                              ((item.get("parent") or {}).get("subscription_details") or {}).get("subscription"))]
    return sum(amounts) if amounts else None


def proration_amount(invoice) -> int | None:
    """What Stripe charged (+) or credited (-) for a change of items, in minor units: the sum
    of the proration lines of the invoice the change made (billing_reason `subscription_update`,
    https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason). A line says it
    is a proration in `proration` before API 2025-03-31, in
    `parent.subscription_item_details.proration` since (https://docs.stripe.com/api/
    invoice-line-item/object#invoice_line_item_object-parent-subscription_item_details-proration).
    None when the change made no such invoice (prorations left for the next renewal's
    invoice, or none) or the webhook carries only its id."""
    if not isinstance(invoice, dict) or invoice.get("billing_reason") != "subscription_update":
        return None
    lines = (invoice.get("lines") or {}).get("data") or []
    prorations = [line["amount"] for line in lines if line.get("amount") is not None and (
        line.get("proration")
        or ((line.get("parent") or {}).get("subscription_item_details") or {}).get("proration"))]
    return sum(prorations) if prorations else None


def normalize_canceled_subscription(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return [_subscription_event(ev.SUBSCRIPTION_CANCELED, payload)]


def normalize_trial_ending(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return [_subscription_event(ev.TRIAL_ENDING, payload)]


def _subscription_event(name: str, payload: dict) -> CanonicalEvent:
    return _event(name, payload, _customer(payload), _subscription_data(_object(payload)))


# Event type → (canonical event, payment status).
PAYMENT_OUTCOMES = {
    "invoice.paid": (ev.PAYMENT_SUCCEEDED, "succeeded"),
    "invoice.payment_succeeded": (ev.PAYMENT_SUCCEEDED, "succeeded"),
    "invoice.payment_failed": (ev.PAYMENT_FAILED, "failed"),
    "invoice.payment_action_required": (ev.PAYMENT_ACTION_REQUIRED, "action_required"),
    # Collection stopped: the invoice written off, or cancelled
    # (https://docs.stripe.com/invoicing/overview#invoice-statuses).
    "invoice.marked_uncollectible": (ev.PAYMENT_CLOSED, "uncollectible"),
    "invoice.voided": (ev.PAYMENT_CLOSED, "void"),
}

# Decline codes that no retry will fix: the customer must give another card (Stripe's
# next step for each is "use another card" or "do not retry",
# https://docs.stripe.com/declines/codes). Soft ones (insufficient_funds, do_not_honor,
# generic_decline, ...) send the customer to the issuer and may pass on a retry.
HARD_DECLINES = {"stolen_card", "lost_card", "pickup_card", "restricted_card", "fraudulent",
                 "expired_card", "incorrect_number", "invalid_number", "invalid_account",
                 "card_not_supported", "new_account_information_available"}
# The issuer's own advice that overrides a soft code: "do_not_try_again"
# (https://docs.stripe.com/declines/card#retrying-issuer-declines).
HARD_ADVICE = {"do_not_try_again"}


def hard_decline(error: dict) -> str | None:
    """Why a Stripe payment error (last_payment_error, or a card_error's `error`) is a decline
    no retry will fix (the issuer's advice, or the decline code); None when a retry may pass."""
    if error.get("advice_code") in HARD_ADVICE:
        return f"the issuer advises {error['advice_code']}"
    code = error.get("decline_code") or error.get("code")
    return code if code in HARD_DECLINES else None


def normalize_payment(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    invoice = _object(payload)
    name, status = PAYMENT_OUTCOMES[payload["type"]]
    if status == "failed":
        status = _failure_status(invoice)
    error = _payment_error(invoice, payload.get("_payments"))
    data = _invoice_payment_data(invoice, status, error)
    return [_event(name, payload, _invoice_customer(payload), data)]


def normalize_failed_payment_intent(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """payment_intent.payment_failed: the decline of an invoice's payment, for the invoice it
    pays. Since API 2025-03-31 a payment intent no longer names its invoice: ENRICH finds it
    (with its current state) through the invoice payments; a payment intent that pays no
    invoice (a one-off checkout) is no subscription payment and gives nothing."""
    intent = _object(payload)
    invoice = next((p["invoice"] for p in payload.get("_payments") or []
                    if isinstance(p.get("invoice"), dict)), None)
    if invoice is None:
        return []
    error = intent.get("last_payment_error") or {}
    data = _invoice_payment_data(invoice, _failure_status(invoice), error)
    return [_event(ev.PAYMENT_FAILED, payload, _customer(payload, invoice.get("customer_email"),
                                                         invoice.get("customer_phone"),
                                                         invoice.get("customer_name")), data)]


def _failure_status(invoice: dict) -> str:
    """The failure's status: "failed", or "retries_exhausted" when Stripe will not try this
    open invoice again: its `next_payment_attempt` is the time of the next automatic
    attempt, null when none is scheduled (https://docs.stripe.com/api/invoices/object), as
    after the last retry of the schedule or a decline Stripe does not retry
    (https://docs.stripe.com/billing/revenue-recovery/smart-retries). A send_invoice invoice
    (the customer pays it) never has one."""
    charged = invoice.get("collection_method", "charge_automatically") == "charge_automatically"
    exhausted = (charged and invoice.get("status") == "open" and "next_payment_attempt" in invoice
                 and invoice["next_payment_attempt"] is None)
    return "retries_exhausted" if exhausted else "failed"


def _invoice_payment_data(invoice: dict, status: str, error: dict) -> dict:
    return {
        "source_id": _id(invoice.get("id")),
        "subscription_source_id": _invoice_subscription_id(invoice),
        "status": status,
        "amount": invoice.get("amount_paid" if status == "succeeded" else "amount_due"),
        "currency": _currency(invoice),
        "attempt_count": invoice.get("attempt_count"),
        "next_retry_at": utc(invoice.get("next_payment_attempt")),
        "failure_reason": error.get("message") or error.get("code") or error.get("type"),
        "decline_code": error.get("decline_code"),
        "hard_decline": hard_decline(error) is not None,
        "due_at": utc(invoice.get("due_date")),
        "paid_at": utc((invoice.get("status_transitions") or {}).get("paid_at")),
        "update_payment_url": invoice.get("hosted_invoice_url"),
    }


def normalize_renewal(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """invoice.upcoming: a preview of the next renewal's invoice (it has no id yet)."""
    invoice = _object(payload)
    data = {
        "subscription_source_id": _invoice_subscription_id(invoice),
        # The billed period ends when the subscription renews; the charge follows about an
        # hour later (next_payment_attempt), once the invoice is finalized.
        "renewal_at": utc(invoice.get("period_end") or invoice.get("next_payment_attempt")),
        "amount": invoice.get("amount_due"),
        "currency": _currency(invoice),
    }
    return [_event(ev.RENEWAL_UPCOMING, payload, _invoice_customer(payload), data)]


def normalize_schedule(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """subscription_schedule.*: what the subscription's next renewal bills under its schedule.

    A schedule changes the subscription's items phase by phase; the renewal that falls in a
    later phase bills that phase's items (https://docs.stripe.com/billing/subscriptions/
    subscription-schedules). ENRICH reads the subscription (its next renewal) and the schedule
    with its phases' prices expanded. A schedule no longer active (released, completed,
    canceled, aborted), or a renewal within the phase under way, leaves the subscription's own
    price to bill; so does a phase whose amount cannot be told from its prices (tiered, or
    with discounts)."""
    schedule = payload.get("_schedule") or _object(payload)
    sub_id = _schedule_subscription_id(schedule)
    subscription = payload.get("_subscription")
    if not sub_id or not subscription:
        return []
    renewal_at = _subscription_data(subscription)["next_renewal_at"]
    data = {"subscription_source_id": sub_id, "renewal_at": renewal_at}
    priced = _phase_price(schedule_phase(schedule, renewal_at)) if renewal_at else None
    if priced is None:
        data["priced_as_subscription"] = True
    else:
        data["amount"], data["currency"] = priced
    return [_event(ev.RENEWAL_UPCOMING, payload, _customer(payload), data)]


def _schedule_subscription_id(schedule: dict) -> str | None:
    """The subscription a schedule runs, or ran until it was released."""
    return _id(schedule.get("subscription")) or _id(schedule.get("released_subscription"))


def schedule_phase(schedule: dict, at: datetime) -> dict | None:
    """The phase of an active schedule in force at `at`, unless it is the phase under way (the
    subscription's own items). Past the last phase a released subscription keeps that phase's
    items (end_behavior `release`)."""
    if schedule.get("status") != "active":
        return None
    moment = int(at.timestamp())
    phases = sorted(schedule.get("phases") or [], key=lambda phase: phase.get("start_date") or 0)
    found = next((phase for phase in phases if (phase.get("start_date") or 0) <= moment
                  and (phase.get("end_date") is None or moment < phase["end_date"])), None)
    if found is None and phases and schedule.get("end_behavior") == "release" \
            and moment >= (phases[-1].get("end_date") or 0):
        found = phases[-1]
    under_way = (schedule.get("current_phase") or {}).get("start_date")
    if found is None or found.get("start_date") == under_way:
        return None
    return found


def _phase_price(phase: dict | None) -> tuple[int, str | None] | None:
    """(amount, currency) a phase's items bill each period: each price's unit_amount × quantity;
    None when a price is not expanded, has no unit_amount (tiered), or discounts apply."""
    if phase is None or phase.get("discounts") or not phase.get("items"):
        return None
    amount, currency = 0, _currency(phase)
    for item in phase["items"]:
        price = item.get("price")
        if not isinstance(price, dict) or not isinstance(price.get("unit_amount"), int) or item.get("discounts"):
            return None
        amount += price["unit_amount"] * (item.get("quantity") or 1)
        currency = currency or _currency(price)
    return amount, currency


def normalize_expiring_card(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return [_event(ev.PAYMENT_METHOD_EXPIRING, payload, _customer(payload),
                   _card_data(_object(payload)))]


def normalize_updated_card(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """payment_method.attached, .updated and .automatically_updated: the card on file as it is now.
    automatically_updated: the card network sent new details (card updater), not the customer."""
    auto = payload["type"] == "payment_method.automatically_updated"
    return [_event(ev.PAYMENT_METHOD_UPDATED, payload, _customer(payload),
                   _card_data(_object(payload), auto_updated=auto))]


def normalize_detached_card(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """payment_method.detached: the card is off the customer, so no expiry to warn about. The
    object no longer names the customer; `previous_attributes.customer` does
    (https://docs.stripe.com/api/payment_methods/detach)."""
    data = {**_card_data(_object(payload)), "exp_month": None, "exp_year": None}
    return [_event(ev.PAYMENT_METHOD_UPDATED, payload, _customer(payload), data)]


# A schedule's changes, and its end (https://docs.stripe.com/api/events/types): `aborted` is
# its cancellation with a delinquent subscription; `expiring` (7 days before the end) says
# nothing new of the next renewal.
SCHEDULE_TOPICS = ("subscription_schedule.created", "subscription_schedule.updated",
                   "subscription_schedule.released", "subscription_schedule.completed",
                   "subscription_schedule.canceled", "subscription_schedule.aborted")

# A change made with payment_behavior=pending_if_incomplete waits in `pending_update` until
# its invoice is paid; then "the subscription is updated" (pending_update_applied), or the
# change is dropped when it expires (https://docs.stripe.com/billing/subscriptions/pending-updates).
PENDING_UPDATE_TOPICS = ("customer.subscription.pending_update_applied",
                         "customer.subscription.pending_update_expired")

TOPICS = {
    "customer.created": normalize_customer,
    "customer.updated": normalize_customer,
    "customer.deleted": normalize_deleted_customer,
    "checkout.session.completed": normalize_checkout,
    # A delayed method (bank debit, transfer) completes a Checkout `unpaid`; these say how its
    # payment ended, with the session as it then is (https://docs.stripe.com/checkout/fulfillment).
    "checkout.session.async_payment_succeeded": normalize_checkout,
    "checkout.session.async_payment_failed": normalize_checkout,
    "charge.refunded": normalize_refund,
    "refund.failed": normalize_refund_change,
    "refund.updated": normalize_refund_change,
    "charge.dispute.funds_withdrawn": _dispute_event(withdrawn=True),
    "charge.dispute.funds_reinstated": _dispute_event(withdrawn=False),
    "credit_note.created": normalize_credit_note,
    "credit_note.voided": normalize_credit_note,
    "customer.subscription.created": normalize_subscription,
    "customer.subscription.updated": normalize_subscription,
    "customer.subscription.paused": normalize_subscription,
    "customer.subscription.resumed": normalize_subscription,
    **dict.fromkeys(PENDING_UPDATE_TOPICS, normalize_subscription),
    "customer.subscription.deleted": normalize_canceled_subscription,
    "customer.subscription.trial_will_end": normalize_trial_ending,
    "invoice.paid": normalize_payment,
    "invoice.payment_succeeded": normalize_payment,
    "invoice.payment_failed": normalize_payment,
    "invoice.payment_action_required": normalize_payment,
    "invoice.marked_uncollectible": normalize_payment,
    "invoice.voided": normalize_payment,
    "invoice.upcoming": normalize_renewal,
    **dict.fromkeys(SCHEDULE_TOPICS, normalize_schedule),
    "payment_intent.payment_failed": normalize_failed_payment_intent,
    "customer.source.expiring": normalize_expiring_card,
    "payment_method.attached": normalize_updated_card,
    "payment_method.updated": normalize_updated_card,
    "payment_method.automatically_updated": normalize_updated_card,
    "payment_method.detached": normalize_detached_card,
}


# --- enrichment (I/O): the customer's email and name for events that carry only its id ----

def attach_customer(payload: dict, settings) -> dict:
    """The payload with the customer under "_customer", fetched from Stripe; unchanged
    without an API key or when Stripe refuses (the event still applies by customer id). No
    answer raises RetryLater (_unless_unanswered), as for every call below."""
    return _with_customer(payload, settings, _customer_id(payload))


def _with_customer(payload: dict, settings, customer_id) -> dict:
    if not settings.STRIPE_API_KEY or not isinstance(customer_id, str):
        return payload
    try:
        customer = _client(settings).v1.customers.retrieve(customer_id)
    except stripe.StripeError as exc:
        _unless_unanswered(exc, f"GET /v1/customers/{customer_id}")
        return payload
    return {**payload, "_customer": customer.to_dict()}


def attach_refunds(payload: dict, settings) -> dict:
    """charge.refunded, refund.failed, refund.updated: the charge's refunds under "_refunds"
    (GET /v1/refunds?charge=…, https://docs.stripe.com/api/refunds/list), each with its status.
    Unchanged without an API key or when Stripe refuses."""
    obj = _object(payload)
    charge_id = _id(obj.get("charge")) if obj.get("object") == "refund" else _id(obj.get("id"))
    if not settings.STRIPE_API_KEY or not charge_id:
        return payload
    return _with_listing(payload, settings, "refunds", {"charge": charge_id, "limit": 100}, "_refunds",
                         f"GET /v1/refunds?charge={charge_id}")


def attach_charge(payload: dict, settings) -> dict:
    """A dispute names its charge only: the charge under "_charge" (GET /v1/charges/:id,
    https://docs.stripe.com/api/charges/retrieve) and its customer, whose spend the dispute
    takes back. Unchanged without an API key or when Stripe refuses."""
    charge_id = _id(_object(payload).get("charge"))
    charge = _retrieved(settings, "charges", charge_id) if settings.STRIPE_API_KEY and charge_id else None
    if charge is None:
        return payload
    return _with_customer({**payload, "_charge": charge}, settings, _id(charge.get("customer")))


def attach_schedule(payload: dict, settings) -> dict:
    """subscription_schedule.*: the customer, the schedule's subscription under "_subscription"
    (GET /v1/subscriptions/:id: its next renewal) and the schedule as it stands under
    "_schedule", its phases' prices expanded (GET /v1/subscription_schedules/:id?expand[]=
    phases.items.price: a phase names its prices by id,
    https://docs.stripe.com/api/subscription_schedules/retrieve). Unchanged when Stripe refuses."""
    payload = attach_customer(payload, settings)
    schedule = _object(payload)
    sub_id = _schedule_subscription_id(schedule)
    if not settings.STRIPE_API_KEY or not sub_id or not isinstance(schedule.get("id"), str):
        return payload
    subscription = _retrieved(settings, "subscriptions", sub_id)
    if subscription is None:
        return payload
    return _with_schedule({**payload, "_subscription": subscription}, settings, schedule["id"])


def attach_subscription(payload: dict, settings) -> dict:
    """customer.subscription.*: the customer (and for a change of items what it billed,
    attach_change_invoice); for a subscription a schedule runs (`schedule`,
    https://docs.stripe.com/api/subscriptions/object), that schedule as it stands."""
    if payload.get("type") in ("customer.subscription.updated", "customer.subscription.pending_update_applied"):
        payload = attach_change_invoice(payload, settings)
    else:
        payload = attach_customer(payload, settings)
    schedule_id = _id(_object(payload).get("schedule"))
    if not settings.STRIPE_API_KEY or not schedule_id or not _renewal_moved(payload):
        return payload
    return _with_schedule(payload, settings, schedule_id)


# What a subscription's renewal or change of items names as changed: its period on the items
# since API 2025-03-31, on the subscription before.
_RENEWAL_FIELDS = {"items", "plan", "quantity", "current_period_start", "current_period_end"}


def _renewal_moved(payload: dict) -> bool:
    """A new subscription, one that renewed or changed items, or one listed whole (backfill,
    reconciliation: no previous_attributes): its next renewal may fall in another phase of its
    schedule. Other changes leave what a notice (invoice.upcoming, exact to the cent) said of
    it as it was."""
    previous = payload["data"].get("previous_attributes")
    return (payload.get("type") == "customer.subscription.created" or previous is None
            or bool(_RENEWAL_FIELDS & set(previous)))


def _with_schedule(payload: dict, settings, schedule_id: str) -> dict:
    """The schedule under "_schedule", its phases' prices expanded (a phase names its prices by
    id: expand[]=phases.items.price). Unchanged when Stripe refuses."""
    fresh = _retrieved(settings, "subscription_schedules", schedule_id, {"expand": ["phases.items.price"]})
    return {**payload, "_schedule": fresh} if fresh else payload


def _retrieved(settings, resource: str, object_id: str, params: dict | None = None) -> dict | None:
    """One Stripe object as sent (to_dict() would make Decimals of decimal strings, which the
    inbox cannot store); None when Stripe fails."""
    try:
        return getattr(_client(settings).v1, resource).retrieve(object_id, params).last_response.data
    except stripe.StripeError as exc:
        _unless_unanswered(exc, f"GET /v1/{resource}/{object_id}")
        return None


def attach_payments(payload: dict, settings) -> dict:
    """The customer, and the invoice's payments under "_payments" with their payment intent
    expanded: since API 2025-03-31 an invoice no longer carries `payment_intent` or `charge`,
    and the decline (decline_code) is on the payment intent's last_payment_error. Listed with
    GET /v1/invoice_payments?invoice=… (https://docs.stripe.com/api/invoice-payment/list);
    unchanged when the invoice carries its payment intent expanded, or Stripe refuses."""
    payload = attach_customer(payload, settings)
    invoice = _object(payload)
    if (not settings.STRIPE_API_KEY or not isinstance(invoice.get("id"), str)
            or isinstance(invoice.get("payment_intent"), dict)):
        return payload
    return _with_listing(payload, settings, "invoice_payments",
                         {"invoice": invoice["id"], "expand": ["data.payment.payment_intent"]},
                         "_payments", "GET /v1/invoice_payments")


def attach_invoice(payload: dict, settings) -> dict:
    """payment_intent.payment_failed: the invoice payments of the intent under "_payments",
    their invoice expanded (GET /v1/invoice_payments?payment[type]=payment_intent&
    payment[payment_intent]=pi_…, https://docs.stripe.com/api/invoice-payment/list)."""
    payload = attach_customer(payload, settings)
    intent_id = _object(payload).get("id")
    if not settings.STRIPE_API_KEY or not isinstance(intent_id, str):
        return payload
    return _with_listing(payload, settings, "invoice_payments", {
        "payment": {"type": "payment_intent", "payment_intent": intent_id},
        "expand": ["data.invoice"]}, "_payments", "GET /v1/invoice_payments")


def attach_change_invoice(payload: dict, settings) -> dict:
    """customer.subscription.updated: the customer, and for a change of items the subscription's
    latest invoice under "_latest_invoice" (a webhook names it by id; the invoice a change made
    holds Stripe's proration lines: GET /v1/invoices/:id,
    https://docs.stripe.com/api/invoices/retrieve); when that invoice is not the change's, the
    prorations the change left pending (_with_proration_items). Unchanged when Stripe refuses."""
    payload = attach_customer(payload, settings)
    invoice_id = _object(payload).get("latest_invoice")
    if (not settings.STRIPE_API_KEY or not isinstance(invoice_id, str)
            or "items" not in (payload["data"].get("previous_attributes") or {})):
        return payload
    invoice = _retrieved(settings, "invoices", invoice_id)
    if invoice is None:
        return payload
    payload = {**payload, "_latest_invoice": invoice}
    if proration_amount(invoice) is None:
        payload = _with_proration_items(payload, settings)
    return payload


# Stripe makes a change's proration items while it updates the subscription, before the event
# that tells of it: those created in this span up to the event are the change's own.
PRORATION_SPAN_S = 60


def _with_proration_items(payload: dict, settings) -> dict:
    """The invoice items made with the change under "_proration_items": GET /v1/invoiceitems
    by customer and creation time (https://docs.stripe.com/api/invoiceitems/list), pending or
    already on the next invoice. Unchanged when Stripe refuses."""
    customer, created = _id(_object(payload).get("customer")), payload.get("created")
    if not isinstance(customer, str) or not isinstance(created, int):
        return payload
    return _with_listing(payload, settings, "invoice_items", {
        "customer": customer, "limit": 100, "created": {"gte": created - PRORATION_SPAN_S, "lte": created}},
        "_proration_items", "GET /v1/invoiceitems")


# Pages of one listing read at most (100 objects each for the listings that ask a limit).
LISTING_PAGES = 10


def _with_listing(payload: dict, settings, resource: str, params: dict, under: str, call: str) -> dict:
    """The payload with a Stripe listing (`resource` of StripeClient.v1) under `under`, every
    page of it: the next one `starting_after` the last object while `has_more`
    (https://docs.stripe.com/api/pagination). As sent: to_dict() turns decimal strings
    (unit_amount_decimal) into Decimals, which the inbox cannot store. Unchanged when Stripe
    refuses; no answer raises RetryLater."""
    listing, listed = getattr(_client(settings).v1, resource), []
    for _ in range(LISTING_PAGES):
        try:
            page = listing.list(params=params).last_response.data
        except stripe.StripeError as exc:
            _unless_unanswered(exc, call)
            return payload
        listed += page["data"]
        if not (page.get("has_more") and page["data"]):
            break
        params = {**params, "starting_after": page["data"][-1]["id"]}
    return {**payload, under: listed}


def _unless_unanswered(exc: stripe.StripeError, call: str) -> None:
    """RetryLater when Stripe did not answer `call` (no connection, 429, 5xx, after the SDK's
    own tries): the webhook waits and tries again by itself (hub.sync.inbox), rather than
    applying without what the call would have told. A refusal (a revoked key, an object
    gone) returns: the event applies with what it carries."""
    if isinstance(exc, stripe.APIConnectionError) or asks_again(exc.http_status):
        raise RetryLater(0, f"Stripe did not answer {call}: {exc.user_message or type(exc).__name__}") from exc


def _client(settings) -> stripe.StripeClient:
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(settings.STRIPE_API_KEY, base_addresses=base,
                               http_client=stripe.RequestsClient(timeout=20))


ENRICH = {topic: attach_customer for topic in (
    "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.paused", "customer.subscription.resumed",
    "customer.subscription.deleted", "customer.subscription.trial_will_end",
    "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
    "invoice.payment_action_required", "invoice.marked_uncollectible", "invoice.voided",
    "invoice.upcoming",
    "customer.source.expiring", "payment_method.attached", "payment_method.updated",
    "payment_method.automatically_updated", "payment_method.detached",
    "credit_note.created", "credit_note.voided",
)} | {"invoice.payment_failed": attach_payments, "invoice.payment_action_required": attach_payments,
      "payment_intent.payment_failed": attach_invoice,
      **dict.fromkeys(("customer.subscription.created", "customer.subscription.updated",
                       "customer.subscription.paused", "customer.subscription.resumed",
                       *PENDING_UPDATE_TOPICS), attach_subscription),
      "charge.dispute.funds_withdrawn": attach_charge, "charge.dispute.funds_reinstated": attach_charge,
      "charge.refunded": attach_refunds, "refund.failed": attach_refunds, "refund.updated": attach_refunds,
      **dict.fromkeys(SCHEDULE_TOPICS, attach_schedule)}


# --- reading Stripe objects -----------------------------------------------------------------

def _object(payload: dict) -> dict:
    return payload["data"]["object"]


def _event(name: str, payload: dict, customer: dict, data: dict | None = None) -> CanonicalEvent:
    return CanonicalEvent(name=name, source=NAME, occurred_at=utc(payload["created"]),
                          customer=customer, data=data or {})


def _id(value) -> str | None:
    """A reference as a string id (references arrive as ids, or as objects when expanded)."""
    if isinstance(value, dict):
        value = value.get("id")
    return None if value is None else str(value)


def _currency(obj: dict) -> str | None:
    return obj["currency"].upper() if obj.get("currency") else None


def _person(source_id, email=None, phone=None, name=None, created=None) -> dict:
    """The hub's customer dict, with only what is known: a missing email is not a removed one."""
    first, _, last = (name or "").strip().partition(" ")
    person = {"source_id": _id(source_id), "email": normalize_email(email),
              "phone": normalize_phone(phone), "first_name": first or None,
              "last_name": last.strip() or None, "created_at": utc(created)}
    return {key: value for key, value in person.items() if value is not None}


def _person_of_customer(customer: dict) -> dict:
    return _person(customer.get("id"), customer.get("email"), customer.get("phone"),
                   customer.get("name"), customer.get("created"))


def _customer(payload: dict, email=None, phone=None, name=None) -> dict:
    """The customer the object belongs to: what the object says, overridden by the customer
    ENRICH fetched (fresher, and the only source of email for subscriptions and cards)."""
    own = _person(_customer_id(payload), email, phone, name)
    fetched = payload.get("_customer")
    return {**own, **_person_of_customer(fetched)} if fetched else own


def _customer_id(payload: dict):
    """The object's customer; for a detached payment method, the one it was detached from."""
    data = payload.get("data") or {}
    return (data.get("object") or {}).get("customer") or (data.get("previous_attributes") or {}).get("customer")


def _invoice_customer(payload: dict) -> dict:
    invoice = _object(payload)
    return _customer(payload, invoice.get("customer_email"), invoice.get("customer_phone"),
                     invoice.get("customer_name"))


def _invoice_subscription_id(invoice: dict) -> str | None:
    # Before API 2025-03-31 `invoice.subscription`; since, `parent.subscription_details`.
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(invoice.get("subscription") or details.get("subscription"))


def _payment_error(invoice: dict, payments: list | None = None) -> dict:
    """What Stripe said went wrong: the invoice's finalization error, else the last error of
    the payment intent or charge when they come expanded (before API 2025-03-31; a webhook
    carries them as ids), else of the newest invoice payment's intent ENRICH fetched."""
    intent, charge = invoice.get("payment_intent"), invoice.get("charge")
    if invoice.get("last_finalization_error"):
        return invoice["last_finalization_error"]
    if isinstance(intent, dict) and intent.get("last_payment_error"):
        return intent["last_payment_error"]
    for payment in payments or []:  # newest first, as Stripe lists them
        paid_by = (payment.get("payment") or {}).get("payment_intent")
        if isinstance(paid_by, dict) and paid_by.get("last_payment_error"):
            return paid_by["last_payment_error"]
    if isinstance(charge, dict) and charge.get("failure_code"):
        return {"code": charge["failure_code"], "message": charge.get("failure_message")}
    return {}


# Stripe's subscription statuses in the hub's vocabulary (design §3); unknown ones → None.
# `past_due`: retries still running. `unpaid` (retries exhausted, invoices left open, "payments
# aren't attempted") collects nothing, so it is held as paused: live, out of MRR, no renewal
# reminders. `incomplete` is a subscription whose first payment is not made yet (23 h to make
# it; with payment_behavior=default_incomplete every new one starts so), and
# `incomplete_expired` one whose first payment never came: the hub's incomplete and expired,
# neither ever live (https://docs.stripe.com/api/subscriptions/object#subscription_object-status).
STATUSES = {"trialing": "trialing", "active": "active", "past_due": "past_due",
            "incomplete": "incomplete", "unpaid": "paused", "paused": "paused",
            "canceled": "canceled", "incomplete_expired": "expired"}


def _subscription_data(sub: dict) -> dict:
    items = (sub.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    price = _price(first)
    status = STATUSES.get(sub.get("status"))
    # pause_collection leaves Stripe's status `active` while invoices are drafted, voided or
    # marked uncollectible until `resumes_at` (or until it is cleared): no revenue, no renewal
    # to remind of (https://docs.stripe.com/billing/subscriptions/pause-payment).
    pause = sub.get("pause_collection") or {}
    if pause and status in ("active", "past_due"):
        status = "paused"
    # Before API 2025-03-31 the period is on the subscription; since, on each item, and with
    # items of different intervals the next renewal is the soonest item's.
    renewing = min((item for item in items if item.get("current_period_end")),
                   key=lambda item: item["current_period_end"], default=first)
    period_start = sub.get("current_period_start") or renewing.get("current_period_start")
    period_end = sub.get("current_period_end") or renewing.get("current_period_end")
    # Set to end with this period: cancel_at_period_end, or a cancel_at within the period
    # (`cancel_at=min_period_end` and the like "resolve to timestamps immediately", leaving
    # cancel_at_period_end false: https://docs.stripe.com/changelog/basil/2025-07-30/cancel-at-enums).
    ending = bool(sub.get("cancel_at_period_end")
                  or (sub.get("cancel_at") and period_end and sub["cancel_at"] <= period_end))
    ends = ending or status in ("canceled", "expired", "paused", "incomplete")
    product_ids = [_id(_price(item)["product"]) for item in items if _price(item).get("product")]
    interval, interval_count, amount = _billing(items)
    next_renewal = None if ends else utc(period_end)
    if pause.get("resumes_at") and status == "paused" and not sub.get("cancel_at_period_end"):
        next_renewal = _first_renewal_from(utc(pause["resumes_at"]), utc(period_end),
                                           utc(sub.get("billing_cycle_anchor")), interval, interval_count)
        if next_renewal and sub.get("cancel_at") and utc(sub["cancel_at"]) <= next_renewal:
            next_renewal = None  # it is cancelled before collecting again
    return {
        "source_id": _id(sub["id"]),
        "status": status,
        "plan": _plan_name(price),
        "plan_id": _id(price.get("id")),
        "interval": interval,
        "interval_count": interval_count,
        "amount": amount,
        "currency": _currency(sub) or _currency(price),
        "quantity": sum(item.get("quantity") or 0 for item in items) if items else None,
        "current_period_start": utc(period_start),
        "current_period_end": utc(period_end),
        "next_renewal_at": next_renewal,
        "resumes_at": utc(pause.get("resumes_at")),
        "trial_end": utc(sub.get("trial_end")),
        "cancel_at_period_end": ending,
        "canceled_at": utc(sub.get("canceled_at")),
        "product_ids": list(dict.fromkeys(product_ids)),
        **_cancellation(sub),
        # First seen after it expired unpaid (a late delivery, a backfill): it never began.
        **({"started_at": None} if sub.get("status") == "incomplete_expired" else {}),
    }


def _first_renewal_from(resumes_at, period_end, anchor, interval, count):
    """The first renewal Stripe collects after a pause: pause_collection keeps the billing
    cycle, invoices are still made at each period end but not collected until `resumes_at`
    ("The time after which the subscription will resume collecting payments",
    https://docs.stripe.com/api/subscriptions/object#subscription_object-pause_collection-resumes_at;
    https://docs.stripe.com/billing/subscriptions/pause-payment). Months keep the billing
    cycle anchor's day (https://docs.stripe.com/billing/subscriptions/billing-cycle)."""
    if period_end is None or interval not in ("day", "week", "month", "year"):
        return None
    day = anchor.day if anchor and interval in ("month", "year") else None
    renewal, periods = period_end, 0
    # A pause runs for some periods: the loop stops at the first one at or after the resume.
    while renewal < resumes_at:
        periods += 1
        renewal = add_intervals(period_end, interval, count * periods, day)
    return renewal


# Stripe's cancellation_details: `reason` is Stripe's (cancellation_requested, payment_disputed,
# payment_failed), `feedback` the customer's choice in the portal (too_expensive, switched_service,
# ...), `comment` their words (https://docs.stripe.com/api/subscriptions/object
# #subscription_object-cancellation_details).
INVOLUNTARY_REASONS = frozenset({"payment_failed"})


def _cancellation(sub: dict) -> dict:
    """Why the subscription ends: the customer's feedback, else Stripe's reason; churn_type
    involuntary when Stripe ended it for failed payment. Nothing when Stripe names no reason."""
    details = sub.get("cancellation_details") or {}
    reason = details.get("reason")
    if not (reason or details.get("feedback") or details.get("comment")):
        return {}
    return {"cancellation_reason": details.get("feedback") or reason,
            "cancellation_comment": details.get("comment"),
            "churn_type": (ev.INVOLUNTARY if reason in INVOLUNTARY_REASONS
                           else ev.VOLUNTARY if reason else None)}


def _cycle(item: dict) -> tuple:
    """(interval, count) an item bills on; legacy plans carry them on the price itself."""
    price = _price(item)
    recurring = price.get("recurring") or {}
    return (recurring.get("interval") or price.get("interval"),
            recurring.get("interval_count") or price.get("interval_count"))


def _billing(items: list) -> tuple:
    """(interval, interval_count, amount) of the subscription.

    Items of one cycle add up to that cycle's amount. Items of different intervals (flexible
    billing mode) are read each by its own interval and summed as an amount per month.
    """
    cycles = {_cycle(item) for item in items}
    if len(cycles) <= 1:
        interval, count = cycles.pop() if cycles else (None, None)
        return interval, count, _amount(items)
    amounts = [_amount([item]) for item in items]
    if None in amounts:
        return "month", 1, None
    return "month", 1, sum(per_month(amount, *_cycle(item)) for amount, item in zip(amounts, items))


def _price(item: dict) -> dict:
    return item.get("price") or item.get("plan") or {}


def _plan_name(price: dict) -> str | None:
    product = price.get("product")
    product_name = product.get("name") if isinstance(product, dict) else None
    return price.get("nickname") or price.get("name") or product_name or _id(price.get("id"))


def _amount(items: list) -> int | None:
    """Minor units per period over all items; None when one has no flat price (metered, tiered)."""
    total = 0
    for item in items:
        price = _price(item)
        unit = price["unit_amount"] if price.get("unit_amount") is not None else price.get("amount")
        if unit is None:
            return None
        total += int(unit) * (item.get("quantity") or 1)
    return total if items else None


def _card_data(obj: dict, auto_updated: bool = False) -> dict:
    # Payment methods and sources nest the card; a legacy card object is the card itself.
    card = obj["card"] if isinstance(obj.get("card"), dict) else obj
    return {"source_id": _id(obj["id"]), "brand": card.get("brand"), "last4": card.get("last4"),
            "exp_month": card.get("exp_month"), "exp_year": card.get("exp_year"),
            "auto_updated": auto_updated}

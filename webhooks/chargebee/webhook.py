"""Chargebee webhooks: basic-auth check, envelope, normalizers (design §4).

Chargebee posts its API event object as the body: {"id": "ev_…", "occurred_at": unix,
"source", "object": "event", "api_version": "v2", "event_type", "webhook_status",
"content": {"subscription", "customer", "card", "invoice", "transaction", …}}.
Amounts are integer minor units, times are Unix seconds, and attributes that are null
are left out of the JSON altogether. Chargebee signs nothing: the endpoint is protected
with HTTP basic auth set in Settings > Webhooks.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime, timedelta, timezone

from hub import events as ev
from hub.errors import MalformedPayload, SignatureInvalid, SourceNotConfigured
from hub.events import CanonicalEvent
from hub.values import Money, json_value, normalize_email, normalize_phone, readable_utc, utc
from webhooks.envelope import UNREADABLE, Envelope, body_hash_id, header, text_or_none

NAME = "chargebee"
# What verify() needs: without it every webhook is refused (named at `hub run`'s start).
SECRET_SETTINGS = ("CHARGEBEE_WEBHOOK_USER", "CHARGEBEE_WEBHOOK_PASSWORD")

# Chargebee status → canonical status. Chargebee has no past_due (see subscription_status)
# and no expired: a subscription whose billing cycles run out is simply cancelled.
# `future` (created with a start date still ahead) is not billed yet and becomes active or
# in_trial on its own, which is what the hub means by trialing; mapping it to active would
# start "paying subscriber" flows before the first charge.
# `transferred` (moved to another customer) no longer bills this customer: canceled.
STATUSES = {"future": "trialing", "in_trial": "trialing", "active": "active",
            "non_renewing": "active", "paused": "paused", "cancelled": "canceled",
            "transferred": "canceled"}

# Statuses with no renewal ahead: Chargebee leaves next_billing_at out, but be explicit.
_NOT_RENEWING = ("non_renewing", "cancelled", "transferred")

# Decline codes after which retrying the same card is pointless: the customer must give a
# new one. Chargebee passes the gateway's own code on as transaction.error_code and, for
# gateways it details, error_detail.decline_code / error_code
# (https://apidocs.chargebee.com/docs/api/v2/pcv-1/gateway_error_references): Stripe's
# names (https://docs.stripe.com/declines/codes), and Braintree's processor response codes
# of decline type "Hard" (2004 expired card, 2005 invalid number, 2006 invalid expiry,
# 2007 no account, 2012 possible lost card, 2013 possible stolen card, 2014 fraud suspected,
# 2047 pick up card, 2053 card reported lost or stolen:
# https://developer.paypal.com/braintree/docs/reference/general/processor-responses/
# authorization-responses).
HARD_DECLINES = frozenset({"expired_card", "lost_card", "stolen_card", "pickup_card",
                           "restricted_card", "invalid_account", "incorrect_number",
                           "invalid_number", "card_not_supported", "fraudulent",
                           "2004", "2005", "2006", "2007", "2012", "2013", "2014", "2047", "2053"})


# --- authenticity and envelope ------------------------------------------------------------

def verify(settings, headers, body: bytes) -> None:
    """Raise SignatureInvalid unless the request carries the configured basic-auth pair."""
    user = settings.CHARGEBEE_WEBHOOK_USER or ""
    password = settings.CHARGEBEE_WEBHOOK_PASSWORD or ""
    if not user or not password:
        # Without credentials anyone could post events: refuse rather than accept all.
        raise SourceNotConfigured("chargebee webhooks are not configured "
                                  "(set CHARGEBEE_WEBHOOK_USER and CHARGEBEE_WEBHOOK_PASSWORD)")
    scheme, _, token = (header(headers, "Authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise SignatureInvalid("missing basic-auth Authorization header")
    try:
        given_user, sep, given_password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureInvalid("malformed basic-auth credentials") from None
    # Both comparisons always run, so timing tells nothing about which part was wrong.
    ok = hmac.compare_digest(given_user.encode(), user.encode())
    ok &= hmac.compare_digest(given_password.encode(), password.encode())
    if not sep or not ok:
        raise SignatureInvalid("basic-auth credentials do not match")


def describe(headers, body: bytes) -> Envelope:
    """Dedupe id (the event id, the same across Chargebee's retries), topic and times."""
    try:
        event = json_value(body)
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise ValueError("not a Chargebee event")
    except Exception:  # the contract: never raise here; the worker fails the body later
        return Envelope(event_id=body_hash_id(body), topic=UNREADABLE)
    return Envelope(event_id=event["id"], topic=text_or_none(event.get("event_type")) or UNREADABLE,
                    api_version=text_or_none(event.get("api_version")),
                    triggered_at=readable_utc(event.get("occurred_at")),
                    extra={"source": text_or_none(event.get("source"))})




# --- readers of the event's content -------------------------------------------------------

def _content(payload: dict) -> dict:
    return payload.get("content") or {}


def _required(payload: dict, key: str) -> dict:
    obj = _content(payload).get(key)
    if not isinstance(obj, dict):
        raise MalformedPayload(f"Chargebee {payload.get('event_type')} carries no {key}")
    return obj


def changed_at(resource: dict, payload: dict) -> datetime:
    """When the resource took this state, for the model's staleness check.

    resource_version is the ms timestamp Chargebee documents for ordering webhooks that
    arrive out of order; updated_at is the same instant in whole seconds (two changes in
    one second would tie); the event's occurred_at is the last resort.
    """
    version = resource.get("resource_version")
    if isinstance(version, int) and not isinstance(version, bool):
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=version)
    return utc(resource.get("updated_at") or payload.get("occurred_at"))


def customer_of(payload: dict, fallback_id: str | None = None) -> dict:
    """The customer keys of a CanonicalEvent, from content.customer when present."""
    cust = _content(payload).get("customer")
    if not isinstance(cust, dict):
        return {"source_id": fallback_id} if fallback_id else {}
    # Chargebee omits null attributes, so an absent phone means "no phone": keep the None.
    return {"source_id": cust.get("id"), "email": normalize_email(cust.get("email")),
            "phone": normalize_phone(cust.get("phone")), "first_name": cust.get("first_name"),
            "last_name": cust.get("last_name"), "created_at": utc(cust.get("created_at"))}


def recurring_lines(sub: dict) -> list[dict]:
    """Plan and addon lines, as {id, type, quantity, unit_price, amount}, of either catalog.

    Product Catalog 2.0 lists them in subscription_items (one-time `charge` items are left
    out: they are not what renews); 1.0 has plan_* fields and an `addons` list.
    """
    if sub.get("subscription_items"):
        return [{"id": i.get("item_price_id"), "type": i.get("item_type"), "quantity": i.get("quantity"),
                 "unit_price": i.get("unit_price"), "amount": i.get("amount")}
                for i in sub["subscription_items"] if i.get("item_type") in ("plan", "addon")]
    lines = []
    if sub.get("plan_id"):
        lines.append({"id": sub["plan_id"], "type": "plan", "quantity": sub.get("plan_quantity"),
                      "unit_price": sub.get("plan_unit_price"), "amount": sub.get("plan_amount")})
    lines += [{"id": a.get("id"), "type": "addon", "quantity": a.get("quantity"),
               "unit_price": a.get("unit_price"), "amount": a.get("amount")} for a in sub.get("addons") or []]
    return lines


def recurring_amount(lines: list[dict]) -> int | None:
    """Sum of the lines' list prices in minor units (coupons and taxes not applied).

    A line with only unit_price is priced unit_price × quantity; one priced in decimals
    (metered `*_in_decimal` fields) has neither and is skipped.
    """
    amounts = [int(line["amount"]) if line["amount"] is not None
               else int(line["unit_price"]) * int(line["quantity"] or 1)
               for line in lines if line["amount"] is not None or line["unit_price"] is not None]
    return sum(amounts) if amounts else None


def money(amount, currency) -> dict:
    """{"amount", "currency"} for the event's data, or nothing when either is unknown."""
    if amount is None or not currency:
        return {}
    m = Money.from_minor(amount, currency)
    return {"amount": m.amount, "currency": m.currency}


def subscription_status(sub: dict) -> str:
    """Canonical status; a live subscription with unpaid invoices is past_due.

    Chargebee keeps a subscription `active` while dunning runs and counts the unpaid
    invoices in due_invoices_count: that is what the other sources call past_due.
    """
    raw = sub.get("status")
    if raw not in STATUSES:
        raise MalformedPayload(f"unknown Chargebee subscription status {raw!r}")
    status = STATUSES[raw]
    if status == "active" and (sub.get("due_invoices_count") or 0) > 0:
        return "past_due"
    return status


def subscription_data(payload: dict) -> dict:
    """The data of a subscription.* / trial.ending event."""
    sub = _required(payload, "subscription")
    lines = recurring_lines(sub)
    plan = next((line for line in lines if line["type"] == "plan"), {})
    plan_item = next((i for i in sub.get("subscription_items") or [] if i.get("item_type") == "plan"), {})
    raw = sub.get("status")
    data = {
        "source_id": sub.get("id"),
        "status": subscription_status(sub),
        # Webhooks carry the price's id only, no display name: ids are readable
        # ("Coffee-Club-USD-Monthly"), so it stands in as the plan's name too.
        "plan": plan.get("id"),
        "plan_id": plan.get("id"),
        "interval": sub.get("billing_period_unit") or plan_item.get("billing_period_unit"),
        "interval_count": int(sub.get("billing_period") or plan_item.get("billing_period") or 1),
        "quantity": plan.get("quantity"),
        "current_period_start": utc(sub.get("current_term_start")),
        "current_period_end": utc(sub.get("current_term_end")),
        "next_renewal_at": _next_renewal(sub),
        # A paused subscription resumes on its resume_date, or stays paused until resumed
        # by hand when it has none (https://apidocs.chargebee.com/docs/api/subscriptions
        # #pause_a_subscription): Stripe's pause_collection.resumes_at.
        "resumes_at": utc(sub.get("resume_date")) if raw == "paused" else None,
        "trial_end": utc(sub.get("trial_end")),
        "cancel_at_period_end": raw == "non_renewing",
        # For non_renewing, cancelled_at is the future end date; only a done cancel has one.
        "canceled_at": utc(sub.get("cancelled_at")) if raw in ("cancelled", "transferred") else None,
    }
    data.update(money(recurring_amount(lines), sub.get("currency_code")))
    data.update(cancellation(sub))
    return data


def _next_renewal(sub: dict):
    """next_billing_at; for a subscription paused until a resume date, the first renewal after
    it: the current term's end when it resumes within the term, else the resume date itself,
    where an out-of-term resumption renews (https://support.chargebee.com/support/discussions/topics/320673,
    https://www.chargebee.com/docs/pause-subscription.html).

    An active subscription with a pause scheduled ("When a pause has been scheduled, it is the
    date/time of scheduled pause", `pause_date`) renews on no date from the pause on: "Subscription
    renewals will not go through if the renewal date falls within the pause period" (the pause
    page above). Its next renewal is then the one after the scheduled resumption, if any."""
    if sub.get("status") in _NOT_RENEWING:
        return None
    if sub.get("status") == "paused" and sub.get("resume_date"):
        return utc(max(sub["resume_date"], sub.get("current_term_end") or 0))
    pause, renewal = sub.get("pause_date"), sub.get("next_billing_at")
    if sub.get("status") == "active" and pause and (renewal is None or renewal >= pause):
        resume = sub.get("resume_date")
        return utc(max(resume, sub.get("current_term_end") or 0)) if resume else None
    return utc(renewal)


# cancel_reason is Chargebee's own, set when it cancelled (not_paid: dunning ended unpaid;
# no_card: nothing to charge); cancel_reason_code the merchant's reason code, chosen when a
# person cancelled (https://apidocs.chargebee.com/docs/api/subscriptions
# #subscription_cancel_reason, #subscription_cancel_reason_code).
INVOLUNTARY_REASONS = frozenset({"not_paid", "no_card"})


def cancellation(sub: dict) -> dict:
    """cancellation_reason and churn_type of a subscription that names why it ends."""
    reason, code = sub.get("cancel_reason"), sub.get("cancel_reason_code")
    if not (reason or code):
        return {}
    return {"cancellation_reason": code or reason,
            "churn_type": ev.INVOLUNTARY if reason in INVOLUNTARY_REASONS else ev.VOLUNTARY}


def payment_data(payload: dict, status: str) -> dict:
    """The data of a payment.* event, from content.invoice and content.transaction."""
    content = _content(payload)
    inv, txn = content.get("invoice") or {}, content.get("transaction") or {}
    if not inv and not txn:
        raise MalformedPayload(f"Chargebee {payload.get('event_type')} carries no invoice or transaction")
    sub = content.get("subscription") or {}
    data = {
        # The invoice id stays the same across dunning retries; each retry is a new transaction.
        "source_id": inv.get("id") or txn.get("id"),
        "subscription_source_id": inv.get("subscription_id") or txn.get("subscription_id") or sub.get("id"),
        "status": status,
        "due_at": utc(inv.get("due_date")),
        "update_payment_url": None,  # Chargebee sends none; hosted pages are made through the API
    }
    if inv.get("dunning_attempts"):
        # Chargebee lists the attempts made while dunning; an empty list (a first charge)
        # says nothing, so attempt_count is then left out rather than set to 0.
        data["attempt_count"] = len(inv["dunning_attempts"])
    if status == "failed":
        detail = txn.get("error_detail") or {}
        decline = detail.get("decline_code") or txn.get("error_code")
        codes = {decline, txn.get("error_code"), detail.get("error_code")}
        if inv.get("dunning_status") == "exhausted":
            # The last dunning attempt failed: Chargebee will not retry (its final payment_failed
            # says so: https://www.chargebee.com/docs/payments/2.0/kb/payments/
            # which-event-marks-the-closing-of-the-dunning-period).
            data["status"] = "retries_exhausted"
        data.update(next_retry_at=utc(inv.get("next_retry_at")), failure_reason=txn.get("error_text"),
                    decline_code=decline,
                    hard_decline=bool(codes & HARD_DECLINES))
        fallback_amount = inv.get("amount_due")
    else:
        data["paid_at"] = utc(inv.get("paid_at") or txn.get("date"))
        fallback_amount = inv.get("amount_paid")
    amount = txn["amount"] if txn.get("amount") is not None else fallback_amount
    data.update(money(amount, txn.get("currency_code") or inv.get("currency_code")))
    return data


def card_data(payload: dict) -> tuple[dict, dict]:
    """(resource, data) of a payment_method.* event: the legacy `card` of card_* events, or
    the `payment_source` (its card nested) of payment_source_* events
    (https://apidocs.chargebee.com/docs/api/payment_sources)."""
    content = _content(payload)
    source = content.get("payment_source")
    if isinstance(source, dict):
        card = source.get("card") or {}
        return source, {"source_id": source.get("id"), "brand": card.get("brand"), "last4": card.get("last4"),
                        "exp_month": card.get("expiry_month"), "exp_year": card.get("expiry_year")}
    card = _required(payload, "card")
    return card, {"source_id": card.get("payment_source_id") or card.get("customer_id"),
                  "brand": card.get("card_type"), "last4": card.get("last4"),
                  "exp_month": card.get("expiry_month"), "exp_year": card.get("expiry_year")}


# --- normalizers ----------------------------------------------------------------------------

def _event(name: str, payload: dict, resource: dict, data: dict,
           customer_id: str | None = None) -> list[CanonicalEvent]:
    return [CanonicalEvent(name=name, source=NAME, occurred_at=changed_at(resource, payload),
                           customer=customer_of(payload, customer_id), data=data)]


def customer_upserted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """The customer, with the card Chargebee charges: primary_payment_source_id
    (https://apidocs.chargebee.com/docs/api/customers). Chargebee omits null attributes, so
    a customer without one has no card to charge (None), as Stripe's default_card says."""
    customer = _required(payload, "customer")
    return _event(ev.CUSTOMER_UPSERTED, payload, customer,
                  {"default_card": customer.get("primary_payment_source_id")})


def customer_deleted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return _event(ev.CUSTOMER_DELETED, payload, _required(payload, "customer"), {})


def _subscription_event(name: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        sub = _required(payload, "subscription")
        return _event(name, payload, sub, subscription_data(payload), sub.get("customer_id"))
    normalize.__name__ = name.replace(".", "_")
    return normalize


subscription_upserted = _subscription_event(ev.SUBSCRIPTION_UPSERTED)
subscription_canceled = _subscription_event(ev.SUBSCRIPTION_CANCELED)


def proration_amount(payload: dict) -> int | None:
    """What Chargebee charged (+) or credited (-) for a subscription change, in minor units: the
    change's invoice and unbilled charges, less its credit notes, as an update of a subscription
    returns them and its subscription_changed event carries them (content.invoice,
    unbilled_charges, credit_notes: https://apidocs.chargebee.com/docs/api/subscriptions
    #update_subscription_for_items). None when the change billed and credited nothing."""
    content = _content(payload)
    sub_id = (content.get("subscription") or {}).get("id")

    def mine(items) -> list[dict]:
        return [x for x in items if isinstance(x, dict) and x.get("subscription_id", sub_id) == sub_id]

    invoice = content.get("invoice")
    charged = [invoice.get("total")] if isinstance(invoice, dict) and mine([invoice]) else []
    charged += [x.get("amount") for x in mine(content.get("unbilled_charges") or [])]
    credited = [x.get("total") for x in mine(content.get("credit_notes") or [])]
    if not [x for x in charged + credited if x is not None]:
        return None
    return sum(int(x) for x in charged if x is not None) - sum(int(x) for x in credited if x is not None)


def subscription_changed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """subscription_changed (and its backdated kind): the subscription, and what the platform
    billed or credited for the change."""
    events = _subscription_event(ev.SUBSCRIPTION_UPSERTED)(payload, envelope)
    events[0].data["proration_amount"] = proration_amount(payload)
    return events


def trial_ending(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    # Reminders are new facts about an unchanged subscription: dated by the event, so the
    # model's staleness check never drops them as "not newer than what we hold".
    sub = _required(payload, "subscription")
    return _event(ev.TRIAL_ENDING, payload, {}, subscription_data(payload), sub.get("customer_id"))


def renewal_upcoming(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """subscription_renewal_reminder: the next renewal, and what it will charge: the current
    items, or the scheduled ones where ENRICH fetched them (a change set for the term's end)."""
    sub = _required(payload, "subscription")
    return _event(ev.RENEWAL_UPCOMING, payload, {}, _renewal_charge(payload, sub), sub.get("customer_id"))


def _renewal_charge(payload: dict, sub: dict) -> dict:
    renewal = utc(sub.get("next_billing_at"))
    scheduled = payload.get("_scheduled") or {}
    changes_at = utc(scheduled.get("changes_scheduled_at"))
    items = scheduled if scheduled and (changes_at is None or renewal is None or changes_at <= renewal) else sub
    return {"subscription_source_id": sub.get("id"), "renewal_at": renewal,
            **money(recurring_amount(recurring_lines(items)), items.get("currency_code"))}


def changes_scheduled(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """subscription_changes_scheduled / subscription_scheduled_changes_removed: the subscription
    as it is (a change set for the end of the term applies then, with subscription_renewed),
    and what its next renewal will charge: as the changes make it, or, once they are removed,
    the current items again."""
    events = subscription_upserted(payload, envelope)
    sub = _required(payload, "subscription")
    if not sub.get("next_billing_at") or (sub.get("has_scheduled_changes") and not payload.get("_scheduled")):
        return events  # no renewal, or changes the hub could not read: the price stands
    # Dated as the subscription's own change, which it follows.
    return events + _event(ev.RENEWAL_UPCOMING, payload, sub, _renewal_charge(payload, sub), sub.get("customer_id"))


def _payment_event(name: str, status: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        data = payment_data(payload, status)
        content = _content(payload)
        resource = content.get("transaction") or content.get("invoice") or {}
        return _event(name, payload, resource, data, resource.get("customer_id"))
    normalize.__name__ = name.replace(".", "_")
    return normalize


payment_succeeded = _payment_event(ev.PAYMENT_SUCCEEDED, "succeeded")
payment_failed = _payment_event(ev.PAYMENT_FAILED, "failed")


def refund(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """payment_refunded: the refund transaction (`type` refund, https://apidocs.chargebee.com/
    docs/api/transactions) of an invoice, as Stripe's charge.refunded gives order.refunded:
    this refund's own amount, keyed to the invoice it gives back on."""
    txn = _required(payload, "transaction")
    invoice = _content(payload).get("invoice") or {}
    credit_notes = txn.get("linked_credit_notes") or [{}]
    data = {"source_id": txn.get("id"),
            "order_source_id": invoice.get("id") or credit_notes[0].get("cn_reference_invoice_id"),
            **money(txn.get("amount"), txn.get("currency_code"))}
    return _event(ev.ORDER_REFUNDED, payload, txn, data, txn.get("customer_id"))


def dunning_updated(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """dunning_updated carries the invoice alone: its `dunning_status` (in_progress, exhausted,
    stopped, success) and `next_retry_at` (https://apidocs.chargebee.com/docs/api/invoices).
    A retry moved or the last one spent is a failure with its new schedule; dunning stopped is
    collection given up: a voided invoice is void (Stripe's invoice.voided), an unpaid one
    uncollectible (invoice.marked_uncollectible); a paid invoice was already told by
    payment_succeeded."""
    invoice = _required(payload, "invoice")
    if invoice.get("status") == "paid" or invoice.get("dunning_status") == "success":
        return []
    if invoice.get("dunning_status") == "stopped":
        closed = "void" if invoice.get("status") == "voided" else "uncollectible"
        data = {**payment_data(payload, "failed"), "status": closed, "next_retry_at": None}
        return _event(ev.PAYMENT_CLOSED, payload, invoice, data, invoice.get("customer_id"))
    return _event(ev.PAYMENT_FAILED, payload, invoice, payment_data(payload, "failed"), invoice.get("customer_id"))


def payment_method_expiring(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """card_expiry_reminder / payment_source_expiring, and the card that has expired
    (card_expired / payment_source_expired): either way the customer must give a new one."""
    resource, data = card_data(payload)  # a notice: dated by the event (see trial_ending)
    return _event(ev.PAYMENT_METHOD_EXPIRING, payload, {}, data, resource.get("customer_id"))


def payment_method_updated(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    resource, data = card_data(payload)
    return _event(ev.PAYMENT_METHOD_UPDATED, payload, resource, data, resource.get("customer_id"))


def payment_method_removed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """card_deleted / payment_source_deleted: off the customer, so no expiry to warn about
    (what Stripe's payment_method.detached gives)."""
    resource, data = card_data(payload)
    return _event(ev.PAYMENT_METHOD_UPDATED, payload, resource, {**data, "exp_month": None, "exp_year": None},
                  resource.get("customer_id"))


# Event types: https://apidocs.chargebee.com/docs/api/events (the full list in the SDK's
# WebhookEventType). Each maps to the canonical event Stripe's equivalent gives.
# `*_with_backdating`: a change applied with an effective date in the past. It is still a
# new state of the subscription and, like every event here, is ordered by the
# subscription's resource_version (changed_at), not by the date it takes effect from, so an
# older version delivered late never overwrites it.
TOPICS = {
    "customer_created": customer_upserted,
    "customer_changed": customer_upserted,
    "customer_deleted": customer_deleted,
    **dict.fromkeys(("subscription_changed", "subscription_changed_with_backdating"), subscription_changed),
    **dict.fromkeys(("subscription_created", "subscription_activated",
                     "subscription_started", "subscription_reactivated", "subscription_renewed",
                     "subscription_paused", "subscription_resumed",
                     # A pause or a resumption planned, or a plan given up: the renewal moves.
                     "subscription_pause_scheduled", "subscription_scheduled_pause_removed",
                     "subscription_resumption_scheduled", "subscription_scheduled_resumption_removed",
                     "subscription_cancellation_scheduled",
                     "subscription_scheduled_cancellation_removed", "subscription_trial_extended",
                     "subscription_created_with_backdating",
                     "subscription_activated_with_backdating",
                     "subscription_reactivated_with_backdating"), subscription_upserted),
    # subscription_deleted: the subscription is gone, as Stripe's customer.subscription.deleted.
    **dict.fromkeys(("subscription_cancelled", "subscription_canceled_with_backdating",
                     "subscription_deleted"), subscription_canceled),
    "subscription_trial_end_reminder": trial_ending,
    "payment_succeeded": payment_succeeded,
    "payment_failed": payment_failed,
    "payment_refunded": refund,
    "dunning_updated": dunning_updated,
    "subscription_renewal_reminder": renewal_upcoming,
    **dict.fromkeys(("subscription_changes_scheduled", "subscription_scheduled_changes_removed"),
                    changes_scheduled),
    **dict.fromkeys(("card_expiry_reminder", "card_expired", "payment_source_expiring",
                     "payment_source_expired"), payment_method_expiring),
    **dict.fromkeys(("card_updated", "card_added", "payment_source_added", "payment_source_updated"),
                    payment_method_updated),
    **dict.fromkeys(("card_deleted", "payment_source_deleted"), payment_method_removed),
}

"""Shopify webhooks: signature, dedupe ids, every topic's normalizer, contract enrichment."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.datastructures import Headers

from hub import events as ev
from hub.config import Settings
from hub.errors import RetryLater, SignatureInvalid
from hub.sync.rules.state import PaymentState
from standins.shopify import INTERNAL_ERROR, FakeShopifyAdmin
from standins.shopify_billing import FakeShopifyBilling
from tests.samples import OURS, SAMPLE_CONTRACT, load_sample, sign_shopify
from webhooks import Envelope, body_hash_id
from webhooks.shopify import api as shopify_api
from webhooks.shopify import backfill as shopify_backfill
from webhooks.shopify import billing as shopify_billing
from webhooks.shopify import webhook as shopify
from webhooks.shopify.api import ShopifyAPIError

SECRET = "shpss_test_secret"
SHOP = "example.myshopify.com"
TRIGGERED = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def normalize(topic: str, payload: dict) -> list[ev.CanonicalEvent]:
    envelope = Envelope(event_id="test", topic=topic, shop=SHOP, api_version="2026-07", triggered_at=TRIGGERED)
    return shopify.TOPICS[topic](payload, envelope)


def sample(name: str) -> dict:
    return load_sample(f"shopify/{name}.json")


def only(events):
    assert len(events) == 1, [e.name for e in events]
    return events[0]


# --- verify ----------------------------------------------------------------------------------

BODY = json.dumps({"id": 1, "email": "a@example.com"}).encode()
SETTINGS = Settings.from_env(env={}, overrides={"SHOPIFY_WEBHOOK_SECRET": SECRET})


def test_verify_accepts_shopifys_signature():
    shopify.verify(SETTINGS, sign_shopify(BODY, SECRET, "customers/create"), BODY)


def test_verify_refuses_a_changed_body_or_another_secret():
    headers = sign_shopify(BODY, SECRET, "customers/create")
    with pytest.raises(SignatureInvalid, match="does not match"):
        shopify.verify(SETTINGS, headers, BODY + b" ")
    with pytest.raises(SignatureInvalid):
        shopify.verify(SETTINGS, sign_shopify(BODY, "another secret", "customers/create"), BODY)


def test_verify_refuses_a_missing_header_and_a_missing_secret():
    headers = sign_shopify(BODY, SECRET, "customers/create")
    del headers["X-Shopify-Hmac-Sha256"]
    with pytest.raises(SignatureInvalid, match="missing"):
        shopify.verify(SETTINGS, headers, BODY)
    with pytest.raises(SignatureInvalid, match="SHOPIFY_WEBHOOK_SECRET"):
        shopify.verify(Settings.from_env(env={}), sign_shopify(BODY, SECRET, "customers/create"), BODY)


def test_verify_reads_header_names_in_any_case():
    signed = sign_shopify(BODY, SECRET, "customers/create")
    lower = {key.lower(): value for key, value in signed.items()}  # HTTP/2 lower-cases names
    upper = {key.upper(): value for key, value in signed.items()}
    for headers in (lower, upper, Headers(list(lower.items()))):
        shopify.verify(SETTINGS, headers, BODY)


def test_verify_settings_default_the_secret_to_the_client_secret():
    settings = Settings.from_env(env={"SHOPIFY_CLIENT_SECRET": SECRET})
    shopify.verify(settings, sign_shopify(BODY, SECRET, "orders/paid"), BODY)


# --- describe --------------------------------------------------------------------------------

def test_describe_dedupes_on_topic_and_event_id_when_shopify_sends_one():
    headers = sign_shopify(BODY, SECRET, "orders/paid", webhook_id="wh-9", event_id="evt-1",
                           triggered_at="2026-11-01T12:00:00.123456Z")
    envelope = shopify.describe(headers, BODY)
    assert envelope.event_id == "orders/paid:evt-1"
    assert (envelope.topic, envelope.shop, envelope.api_version) == ("orders/paid", SHOP, "2025-10")
    assert envelope.triggered_at == datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert envelope.extra == {"webhook_id": "wh-9", "event_id": "evt-1"}


def test_describe_same_event_on_two_topics_gives_two_ids():
    one = shopify.describe(sign_shopify(BODY, SECRET, "orders/create", event_id="evt-1"), BODY)
    two = shopify.describe(sign_shopify(BODY, SECRET, "orders/paid", event_id="evt-1"), BODY)
    assert one.event_id != two.event_id


def test_describe_falls_back_to_the_webhook_id_then_the_body_hash():
    headers = sign_shopify(BODY, SECRET, "orders/paid", webhook_id="wh-9")
    assert shopify.describe(headers, BODY).event_id == "webhook:wh-9"
    del headers["X-Shopify-Webhook-Id"]
    assert shopify.describe(headers, BODY).event_id == body_hash_id(BODY)


def test_describe_never_raises():
    before = datetime.now(timezone.utc)
    envelope = shopify.describe({"x-shopify-triggered-at": "not a time"}, b"\xff not json")
    assert (envelope.topic, envelope.shop) == ("", None)
    # An unreadable time is taken as the time the webhook arrived.
    assert before <= envelope.triggered_at <= datetime.now(timezone.utc)
    assert envelope.event_id == body_hash_id(b"\xff not json")


def test_describe_reads_lower_case_headers():
    headers = {k.lower(): v for k, v in sign_shopify(BODY, SECRET, "app/uninstalled", event_id="e").items()}
    assert shopify.describe(headers, BODY).event_id == "app/uninstalled:e"


# --- tables ----------------------------------------------------------------------------------

def test_every_sample_has_a_normalizer_and_every_normalizer_a_sample():
    samples = {p.stem for p in (OURS / "shopify").glob("*.json")}
    topics = {topic.replace("/", "_") for topic in shopify.TOPICS}
    assert samples == topics


def test_enrich_covers_the_contract_and_billing_attempt_topics():
    assert set(shopify.ENRICH) == {t for t in shopify.TOPICS if t.startswith("subscription_")}


# --- customers and consent (current samples) -------------------------------------------------

@pytest.mark.parametrize("topic", ["customers/create", "customers/update"])
def test_customer_sample(topic):
    event = only(normalize(topic, sample(topic.replace("/", "_"))))  # no consent inside since 2025-01
    assert event.name == ev.CUSTOMER_UPSERTED
    assert event.occurred_at == at("2021-12-31T19:00:00-05:00")
    assert event.customer == {"source_id": "706405506930370084", "email": "bob@biller.com",
                              "first_name": "Bob", "last_name": "Biller",
                              "created_at": at("2021-12-31T19:00:00-05:00")}


def test_customers_delete_sample():
    event = only(normalize("customers/delete", sample("customers_delete")))
    assert (event.name, event.customer, event.occurred_at) == (
        ev.CUSTOMER_DELETED, {"source_id": "706405506930370084"}, TRIGGERED)


def test_email_consent_sample():
    event = only(normalize("customers_email_marketing_consent/update",
                           sample("customers_email_marketing_consent_update")))
    assert event.name == ev.CONSENT_CHANGED
    assert event.customer == {"source_id": "706405506930370084", "email": "bob@biller.com"}
    assert event.data == {"channel": "email", "state": "not_subscribed"}
    assert event.occurred_at == TRIGGERED  # no consent_updated_at in the sample


def test_email_consent_is_ordered_by_its_own_time():
    payload = sample("customers_email_marketing_consent_update")
    payload["email_marketing_consent"] = {"state": "SUBSCRIBED", "opt_in_level": "CONFIRMED_OPT_IN",
                                          "consent_updated_at": "2026-10-30T09:00:00-04:00"}
    event = only(normalize("customers_email_marketing_consent/update", payload))
    assert event.data == {"channel": "email", "state": "subscribed", "opt_in_level": "confirmed_opt_in",
                          "consented_at": at("2026-10-30T13:00:00+00:00")}
    assert event.occurred_at == at("2026-10-30T13:00:00+00:00")


def test_sms_consent_sample_with_a_null_state_says_nothing():
    assert normalize("customers_marketing_consent/update", sample("customers_marketing_consent_update")) == []


def test_sms_consent_with_a_state():
    payload = sample("customers_marketing_consent_update")
    payload["phone"] = "+1 613-555-0135"
    payload["sms_marketing_consent"].update(state="unsubscribed", opt_in_level="single_opt_in",
                                            consent_updated_at="2026-10-31T08:00:00Z")
    event = only(normalize("customers_marketing_consent/update", payload))
    assert event.customer == {"source_id": "706405506930370084", "phone": "+16135550135"}
    assert event.data == {"channel": "sms", "state": "unsubscribed", "opt_in_level": "single_opt_in",
                          "consented_at": at("2026-10-31T08:00:00+00:00")}


def test_customer_payload_before_2025_01_carries_consent():
    payload = sample("customers_update")
    payload["email_marketing_consent"] = {"state": "subscribed", "opt_in_level": "single_opt_in",
                                          "consent_updated_at": "2021-12-30T10:00:00-05:00"}
    payload["sms_marketing_consent"] = None  # customers without a phone
    upserted, consent = normalize("customers/update", payload)
    assert upserted.name == ev.CUSTOMER_UPSERTED
    assert consent.name == ev.CONSENT_CHANGED
    assert consent.customer["source_id"] == "706405506930370084"
    assert consent.data == {"channel": "email", "state": "subscribed", "opt_in_level": "single_opt_in",
                            "consented_at": at("2021-12-30T15:00:00+00:00")}


# --- older REST shapes (shared fixtures) -----------------------------------------------------

def test_rest_customer_with_accepts_marketing():
    upserted, consent = normalize("customers/update", load_sample("shared:shopify/rest/customer.json")["customer"])
    assert upserted.customer == {"source_id": "207119551", "email": "bob.norman@hostmail.com",
                                 "first_name": "Bob", "last_name": "Norman",
                                 "created_at": at("2015-05-27T22:11:24+00:00")}
    assert upserted.occurred_at == at("2015-05-27T22:11:24+00:00")
    assert consent.data == {"channel": "email", "state": "not_subscribed"}
    assert consent.occurred_at == upserted.occurred_at  # no accepts_marketing_updated_at in this shape


def test_rest_customer_with_accepts_marketing_updated_at():
    customer = load_sample("shared:shopify/rest/orders.json")["orders"][0]["customer"]
    upserted, consent = normalize("customers/update", customer)
    assert upserted.customer["phone"] == "+16136120707"
    assert consent.data == {"channel": "email", "state": "not_subscribed",
                            "consented_at": at("2005-06-12T15:57:11+00:00")}


def test_rest_order():
    event = only(normalize("orders/create", load_sample("shared:shopify/rest/order.json")["order"]))
    assert event.name == ev.ORDER_PLACED
    assert event.occurred_at == at("2008-01-10T16:00:00+00:00")
    assert event.customer == {"source_id": "207119551", "email": "bob.norman@hostmail.com",
                              "first_name": "Bob", "last_name": "Norman",
                              "created_at": at("2014-01-22T20:58:27+00:00")}
    data = event.data
    assert (data["source_id"], data["number"], data["total"], data["currency"]) == ("450789469", "#1001", 40994, "USD")
    assert (data["financial_status"], data["is_subscription"]) == ("authorized", False)
    assert data["placed_at"] == at("2008-01-10T16:00:00+00:00")
    assert data["line_items"][0] == {"product_id": "632910392", "variant_id": "39072856",
                                     "title": "IPod Nano - 8gb", "quantity": 1, "price": 19900,
                                     "selling_plan_id": None}
    assert len(data["line_items"]) == 3


def test_rest_orders_list_entry():
    event = only(normalize("orders/paid", load_sample("shared:shopify/rest/orders.json")["orders"][0]))
    assert event.name == ev.ORDER_PAID
    assert (event.data["total"], event.data["financial_status"], event.data["line_items"]) == (
        59894, "partially_refunded", [])
    assert event.customer["email"] == "bob.norman@hostmail.com"


def test_rest_refund_sums_its_transactions():
    event = only(normalize("refunds/create", load_sample("shared:shopify/rest/refund.json")["refund"]))
    assert event.name == ev.ORDER_REFUNDED
    assert event.data == {"source_id": "509562969", "order_source_id": "450789469", "amount": 20900,
                          "currency": "USD"}
    assert event.occurred_at == at("2016-06-20T17:35:06+00:00")


def test_rest_refund_without_transactions_sums_the_refunded_lines():
    refund = load_sample("shared:shopify/rest/refund.json")["refund"]
    refund["transactions"][0]["kind"] = "void"  # no money moved as a refund
    refund["total_duties_set"] = {"shop_money": {"amount": "0.00", "currency_code": "USD"}}
    assert only(normalize("refunds/create", refund)).data["amount"] == 39800  # 2 × 199.00


# --- orders and refunds (current samples) ----------------------------------------------------

@pytest.mark.parametrize("topic, name", [("orders/create", ev.ORDER_PLACED), ("orders/cancelled", ev.ORDER_CANCELLED)])
def test_order_samples(topic, name):
    event = only(normalize(topic, sample(topic.replace("/", "_"))))
    assert event.name == name
    assert event.occurred_at == at("2022-01-01T00:00:00+00:00")
    assert event.customer == {"source_id": "115310627314723954", "email": "john@example.com",
                              "first_name": "John", "last_name": "Smith"}
    data = event.data
    assert (data["source_id"], data["number"], data["total"], data["currency"]) == (
        "820982911946154508", "#9999", 40495, "USD")
    assert (data["financial_status"], data["is_subscription"]) == ("voided", False)
    assert [line["price"] for line in data["line_items"]] == [8999, 1999, 2499, 15999, 11999]
    assert data["line_items"][1] == {"product_id": None, "variant_id": None, "quantity": 1, "price": 1999,
                                     "title": "Lens Protection Plan (2 Year)", "selling_plan_id": None}


def test_orders_paid_sample_names_its_selling_plan_from_2026_10():
    event = only(normalize("orders/paid", sample("orders_paid")))
    assert event.name == ev.ORDER_PAID
    assert (event.data["financial_status"], event.data["is_subscription"]) == ("paid", True)
    assert [line["selling_plan_id"] for line in event.data["line_items"]] == [None, None, None, "987654321", None]


def test_renewal_orders_are_subscription_orders_by_their_source():
    order = sample("orders_create")
    order["source_name"] = "subscription_contract"
    assert only(normalize("orders/create", order)).data["is_subscription"] is True


def test_an_order_webhook_tells_of_its_refunds_as_refunds_create_does():
    refund = sample("refunds_create")
    order = {**sample("orders_paid"), "id": refund["order_id"], "refunds": [refund]}
    paid, refunded = normalize("orders/paid", order)
    assert (paid.name, refunded) == (ev.ORDER_PAID, only(normalize("refunds/create", refund)))


def test_refunds_create_sample():
    event = only(normalize("refunds/create", sample("refunds_create")))
    # Money given back is the two refund transactions (75.00 + 10.00), not the lines' 414.95;
    # the transactions leave currency null, the refunded lines name it.
    assert event.data == {"source_id": "890088186047892319", "order_source_id": "820982911946154508",
                          "amount": 8500, "currency": "USD"}
    assert event.occurred_at == at("2022-01-01T00:00:00+00:00")


def test_a_refund_of_an_order_paid_in_another_currency_counts_shop_money():
    # A USD shop, a customer who paid in EUR: the transaction (null currency) is 99.60 EUR, and
    # the refunded line says 83.00 + 16.60 EUR are 89.99 + 18.00 USD.
    event = only(normalize("refunds/create", sample("multicurrency/refunds_create")))
    assert (event.data["amount"], event.data["currency"]) == (10799, "USD")


def test_a_refund_transaction_that_names_its_currency_is_converted_only_when_it_is_not_the_shops():
    refund = sample("multicurrency/refunds_create")
    refund["transactions"][0]["currency"] = "EUR"
    assert only(normalize("refunds/create", refund)).data["amount"] == 10799
    refund["transactions"][0].update(currency="USD", amount="107.99")  # asked with in_shop_currency
    assert only(normalize("refunds/create", refund)).data["amount"] == 10799


def test_a_custom_amount_refund_in_an_order_webhook_takes_the_orders_rate():
    refund = sample("multicurrency/refunds_create")
    refund.update(refund_line_items=[], transactions=[{**refund["transactions"][0], "amount": "20.00"}])
    # Nothing in the refund itself names both currencies: it says nothing rather than 20.00 USD.
    assert "amount" not in only(normalize("refunds/create", refund)).data
    order = {**sample("orders_paid"), "id": refund["order_id"], "currency": "USD", "presentment_currency": "EUR",
             "total_price": "107.99", "refunds": [refund],
             "total_price_set": {"shop_money": {"amount": "107.99", "currency_code": "USD"},
                                 "presentment_money": {"amount": "99.60", "currency_code": "EUR"}}}
    _, refunded = normalize("orders/cancelled", order)
    assert (refunded.data["amount"], refunded.data["currency"]) == (2168, "USD")  # 20.00 × 107.99 / 99.60


# --- subscription contracts, without enrichment ----------------------------------------------

@pytest.mark.parametrize("topic, name, status", [
    ("subscription_contracts/create", ev.SUBSCRIPTION_UPSERTED, "active"),
    ("subscription_contracts/update", ev.SUBSCRIPTION_UPSERTED, "active"),
    ("subscription_contracts/activate", ev.SUBSCRIPTION_UPSERTED, "active"),
    ("subscription_contracts/pause", ev.SUBSCRIPTION_UPSERTED, "paused"),
    ("subscription_contracts/cancel", ev.SUBSCRIPTION_CANCELED, "canceled"),
    ("subscription_contracts/expire", ev.SUBSCRIPTION_CANCELED, "expired"),
])
def test_contract_samples_without_enrichment(topic, name, status):
    payload = sample(topic.replace("/", "_"))
    event = only(normalize(topic, payload))
    assert event.name == name
    assert event.occurred_at == TRIGGERED  # contracts webhooks carry no updated_at
    assert event.customer == {"source_id": "1"}
    assert event.data == {"source_id": str(payload["id"]), "status": status, "interval": "week",
                          "interval_count": 4, "currency": "CAD",
                          "update_payment_url": "https://example.myshopify.com/account"}


def test_a_failed_contract_has_ended_by_its_billing():
    event = only(normalize("subscription_contracts/fail", sample("subscription_contracts_fail")))
    assert event.name == ev.SUBSCRIPTION_CANCELED
    assert event.data.items() >= {"status": "canceled", "churn_type": "involuntary",
                                  "cancellation_reason": "billing failed"}.items()


@pytest.mark.parametrize("topic, name, status", [
    ("subscription_billing_attempts/success", ev.PAYMENT_SUCCEEDED, "succeeded"),
    ("subscription_billing_attempts/failure", ev.PAYMENT_FAILED, "failed"),
    ("subscription_billing_attempts/challenged", ev.PAYMENT_ACTION_REQUIRED, "action_required"),
])
def test_billing_attempt_samples_without_enrichment(topic, name, status):
    event = only(normalize(topic, sample(topic.replace("/", "_"))))
    assert (event.name, event.occurred_at, event.customer) == (name, TRIGGERED, {})
    # The documented samples send a null attempt id: the idempotency key names the attempt.
    assert event.data["source_id"] == "9a453d81-d41d-403e-806f-714dee215ff9"
    assert event.data["subscription_source_id"] == "9998878778"
    assert event.data["status"] == status
    assert event.data["update_payment_url"] == "https://example.myshopify.com/account"


def test_billing_attempt_failure_codes():
    event = only(normalize("subscription_billing_attempts/failure", sample("subscription_billing_attempts_failure")))
    assert event.data["failure_reason"] == "Payment method was declined by processor."
    assert (event.data["decline_code"], event.data["hard_decline"]) == ("payment_method_declined", False)
    for code, hard in [("expired_payment_method", True), ("INVALID_PAYMENT_METHOD", True),
                       ("payment_method_not_found", True), ("fraud_suspected", True),
                       ("insufficient_inventory", False), ("insufficient_funds", False)]:
        payload = dict(sample("subscription_billing_attempts_failure"), error_code=code, id=7,
                       admin_graphql_api_id="gid://shopify/SubscriptionBillingAttempt/7")
        data = only(normalize("subscription_billing_attempts/failure", payload)).data
        assert (data["source_id"], data["decline_code"], data["hard_decline"]) == ("7", code.lower(), hard)


def test_billing_attempt_success_is_paid_when_triggered():
    event = only(normalize("subscription_billing_attempts/success", sample("subscription_billing_attempts_success")))
    assert event.data["paid_at"] == TRIGGERED
    assert "hard_decline" not in event.data and "decline_code" not in event.data
    assert event.data["order_source_id"] == "1"  # the renewal order, whose money this counts


# --- payment methods, privacy, app, inventory ------------------------------------------------

@pytest.mark.parametrize("topic", ["customer_payment_methods/create", "customer_payment_methods/update"])
def test_payment_method_samples(topic):
    event = only(normalize(topic, sample(topic.replace("/", "_"))))
    assert (event.name, event.customer) == (ev.PAYMENT_METHOD_UPDATED, {"source_id": "82850125"})
    assert event.data == {"source_id": "0eccccc666aac73efcd31094ddc4ebf0", "brand": "visa", "last4": "4242",
                          "exp_month": 8, "exp_year": 2060}


def test_payment_method_revoke_sample_clears_the_expiry():
    event = only(normalize("customer_payment_methods/revoke", sample("customer_payment_methods_revoke")))
    assert event.name == ev.PAYMENT_METHOD_UPDATED
    assert event.data == {"source_id": "0eccccc666aac73efcd31094ddc4ebf0", "brand": "visa", "last4": "4242",
                          "exp_month": None, "exp_year": None}


def test_customers_redact_sample():
    event = only(normalize("customers/redact", sample("customers_redact")))
    assert event.name == ev.SUBSCRIBER_ERASE
    assert event.customer == {"source_id": "191167", "email": "john@example.com", "phone": "+15556251199"}
    assert event.data == {"shop": "{shop}.myshopify.com"}


def test_shop_redact_sample_names_no_customer():
    event = only(normalize("shop/redact", sample("shop_redact")))
    assert (event.name, event.customer, event.data) == (ev.SUBSCRIBER_ERASE, {}, {"shop": "{shop}.myshopify.com"})


def test_customers_data_request_sample():
    event = only(normalize("customers/data_request", sample("customers_data_request")))
    assert event.name == ev.DATA_REQUEST
    assert event.customer["source_id"] == "191167"
    assert event.data == {"request_id": "9999"}


def test_app_uninstalled_sample_names_the_shop_of_the_delivery():
    event = only(normalize("app/uninstalled", sample("app_uninstalled")))
    assert (event.name, event.data, event.occurred_at) == (ev.APP_UNINSTALLED, {"shop": SHOP}, TRIGGERED)


def test_inventory_levels_update_sample():
    event = only(normalize("inventory_levels/update", sample("inventory_levels_update")))
    assert event.name == ev.INVENTORY_CHANGED
    assert event.data == {"inventory_item_id": "271878346596884015", "available": 10}
    assert event.occurred_at == at("2022-01-01T00:00:00+00:00")


def test_rest_inventory_level():
    level = load_sample("shared:shopify/rest/inventory_level.json")["inventory_level"]
    event = only(normalize("inventory_levels/update", level))
    assert event.data == {"inventory_item_id": "808950810", "available": 6}


# --- contract enrichment against the Admin API stand-in --------------------------------------

# The contract of Shopify's billing attempt samples.
BILLED_CONTRACT = "gid://shopify/SubscriptionContract/9998878778"


@pytest.fixture
def admin():
    """A store whose contracts the hub's own app made (SHOPIFY_OWNS_CONTRACTS)."""
    with FakeShopifyAdmin(token="shpat_test", owns_contracts=True) as fake:
        yield fake


@pytest.fixture
def settings(admin):
    return Settings.from_env(env={}, overrides={
        "SHOPIFY_SHOP": SHOP, "SHOPIFY_ACCESS_TOKEN": "shpat_test", "SHOPIFY_OWNS_CONTRACTS": True,
        "SHOPIFY_API_VERSION": "2025-10", "SHOPIFY_ADMIN_URL": admin.url})


def test_enrich_then_normalize_a_new_contract(admin, settings):
    admin.hold(SAMPLE_CONTRACT)
    payload = sample("subscription_contracts_create")
    enriched = shopify.ENRICH["subscription_contracts/create"](payload, settings)

    assert "contract" not in payload  # the stored webhook body stays as Shopify sent it
    request, cycles = admin.requests
    assert request["path"] == "/admin/api/2025-10/graphql.json"
    assert request["headers"]["x-shopify-access-token"] == "shpat_test"
    assert request["variables"] == {"id": "gid://shopify/SubscriptionContract/402440842"}
    assert enriched["contract"]["id"] == "gid://shopify/SubscriptionContract/402440842"
    # Its billing cycles from its next billing date (2026-11-29) on, whose skips move its renewal.
    assert cycles["variables"] == {"id": "gid://shopify/SubscriptionContract/402440842",
                                   "from": "2026-11-28T12:00:00Z", "until": "2028-01-03T12:00:00Z",
                                   "after": None}
    assert [c["billingAttemptExpectedDate"] for c in enriched["billing_cycles"]][:2] == [
        "2026-11-29T12:00:00Z", "2026-12-27T12:00:00Z"]

    event = only(normalize("subscription_contracts/create", enriched))
    assert event.customer == {"source_id": "1", "email": "bob@biller.com", "phone": "+16135550135",
                              "first_name": "Bob", "last_name": "Biller"}
    assert event.data == {
        "source_id": "402440842", "status": "active", "plan": "Example T-Shirt",
        "plan_id": "1039518925", "interval": "week", "interval_count": 4, "amount": 4998, "currency": "CAD",
        "quantity": 2, "next_renewal_at": at("2026-11-29T12:00:00+00:00"),
        "current_period_start": at("2026-11-01T12:00:00+00:00"),
        "current_period_end": at("2026-11-29T12:00:00+00:00"), "product_ids": ["788032119674292922"],
        "update_payment_url": "https://example.myshopify.com/account"}
    assert event.occurred_at == TRIGGERED  # updatedAt (11:58) is older than the delivery


def test_a_skipped_cycle_is_enriched_with_the_cycles_and_names_the_renewal_it_skipped(admin, settings):
    admin.hold(SAMPLE_CONTRACT)  # bills every 4 weeks from 2026-11-29 12:00 UTC
    admin.skip(SAMPLE_CONTRACT, 1)
    payload = sample("subscription_billing_cycles_skip")
    enriched = shopify.ENRICH["subscription_billing_cycles/skip"](payload, settings)
    [event] = normalize("subscription_billing_cycles/skip", enriched)
    assert event.name == ev.SUBSCRIPTION_UPSERTED and event.customer["email"] == "bob@biller.com"
    assert event.data["renewal_skipped"] is True
    assert event.data["skipped_renewal_at"] == at("2026-11-29T12:00:00+00:00")
    assert event.data["next_renewal_at"] == at("2026-12-27T12:00:00+00:00")  # the first cycle not skipped
    assert event.data["current_period_end"] == at("2026-11-29T12:00:00+00:00")  # nextBillingDate, as it stays


def test_a_renewal_past_the_first_page_of_skipped_cycles_is_found_on_the_next(admin, settings):
    """A customer away for a long while skips many deliveries in a row: the next renewal is the
    first cycle not skipped, however many pages of cycles Shopify lists before it."""
    admin.hold(SAMPLE_CONTRACT)  # bills every 4 weeks from 2026-11-29 12:00 UTC
    for index in range(1, 12):
        admin.skip(SAMPLE_CONTRACT, index)
    enriched = shopify.ENRICH["subscription_billing_cycles/skip"](sample("subscription_billing_cycles_skip"), settings)
    [event] = normalize("subscription_billing_cycles/skip", enriched)
    assert event.data["next_renewal_at"] == at("2026-11-29T12:00:00+00:00") + timedelta(weeks=4 * 11)
    pages = [r["variables"].get("after") for r in admin.requests if "subscriptionBillingCycles(" in r["query"]]
    assert len(pages) == 2 and pages[0] is None  # the second page asked after the first one's end


def test_an_unskipped_cycle_brings_the_renewal_back_without_a_skip(admin, settings):
    admin.hold(SAMPLE_CONTRACT)
    unskipped = sample("subscription_billing_cycles_unskip")
    enriched = shopify.ENRICH["subscription_billing_cycles/unskip"](unskipped, settings)
    [event] = normalize("subscription_billing_cycles/unskip", enriched)
    assert "renewal_skipped" not in event.data
    assert event.data["next_renewal_at"] == at("2026-11-29T12:00:00+00:00")


def test_a_cycle_webhook_whose_contract_the_hub_cannot_read_changes_nothing():
    assert normalize("subscription_billing_cycles/skip", sample("subscription_billing_cycles_skip")) == []


def test_enriched_contract_state_wins_and_keeps_its_own_time(admin, settings):
    gid = "gid://shopify/SubscriptionContract/3334363200"
    admin.hold(gid, status="CANCELLED", updatedAt="2026-11-02T08:00:00Z",
               billingPolicy={"interval": "MONTH", "intervalCount": 1}, nextBillingDate="2026-03-31T12:00:00Z")
    enriched = shopify.ENRICH["subscription_contracts/pause"](sample("subscription_contracts_pause"), settings)
    event = only(normalize("subscription_contracts/pause", enriched))
    # A late delivery of the pause fetches today's contract: cancelled, as of its updatedAt.
    assert event.data["status"] == "canceled"
    assert event.occurred_at == at("2026-11-02T08:00:00+00:00")
    assert event.data["current_period_start"] == at("2026-02-28T12:00:00+00:00")  # month end clamps


def test_enrich_then_normalize_a_failed_billing_attempt(admin, settings):
    admin.hold(BILLED_CONTRACT)
    enriched = shopify.ENRICH["subscription_billing_attempts/failure"](
        sample("subscription_billing_attempts_failure"), settings)
    assert admin.requests[0]["variables"] == {"id": "gid://shopify/SubscriptionContract/9998878778"}
    subscription, failed = normalize("subscription_billing_attempts/failure", enriched)
    assert failed.name == ev.PAYMENT_FAILED
    assert failed.customer["email"] == "bob@biller.com"
    assert (failed.data["amount"], failed.data["currency"]) == (4998, "CAD")
    assert failed.data["decline_code"] == "payment_method_declined"
    # The renewal date moved with the attempt; Shopify sends no contract webhook for that.
    assert subscription.name == ev.SUBSCRIPTION_UPSERTED
    assert subscription.data["source_id"] == "9998878778"
    assert subscription.data["next_renewal_at"] == at("2026-11-29T12:00:00+00:00")


def test_enrich_without_shopify_credentials_leaves_the_payload(admin):
    payload = sample("subscription_contracts_create")
    for settings in (Settings.from_env(env={}, overrides={"SHOPIFY_ADMIN_URL": admin.url}),
                     Settings.from_env(env={}, overrides={"SHOPIFY_SHOP": SHOP, "SHOPIFY_ADMIN_URL": admin.url})):
        assert shopify.ENRICH["subscription_contracts/create"](payload, settings) is payload
    assert admin.requests == []


def test_shopifys_own_error_asks_to_try_again_later_with_its_message(admin, settings):
    admin.errors = INTERNAL_ERROR
    with pytest.raises(RetryLater, match=r"Shopify did not answer the contract's query: Internal error\. "
                                         r"Looks like something went wrong on our end\.\n"
                                         r"Request ID: .* \(INTERNAL_SERVER_ERROR\)"):
        shopify.ENRICH["subscription_contracts/update"](sample("subscription_contracts_update"), settings)


def test_a_refused_token_fails_the_contract_query_with_shopifys_words(admin, settings):
    settings.SHOPIFY_ACCESS_TOKEN = "shpat_revoked"
    with pytest.raises(ShopifyAPIError, match="Invalid API key or access token") as refused:
        shopify.ENRICH["subscription_contracts/update"](sample("subscription_contracts_update"), settings)
    assert not isinstance(refused.value, RetryLater) and refused.value.status == 401


def test_a_contract_shopify_will_not_show_leaves_the_ids(admin, settings):
    admin.contracts["gid://shopify/SubscriptionContract/7879037765"] = None
    payload = sample("subscription_contracts_update")
    assert shopify.ENRICH["subscription_contracts/update"](payload, settings) == payload


def test_another_apps_contract_is_answered_as_none_by_the_stand_in(settings):
    with FakeShopifyAdmin(token="shpat_test") as other:  # a normal store: its subscription app owns them
        other.scopes |= {"read_own_subscription_contracts"}
        settings.SHOPIFY_ADMIN_URL = other.url
        with pytest.raises(shopify_api.ContractNotReadable, match="not readable by this app"):
            shopify_api.fetch_contract(settings, "402440842")
        payload = sample("subscription_contracts_create")
        assert shopify.ENRICH["subscription_contracts/create"](payload, settings) == payload


def test_without_the_contract_scope_the_stand_in_denies_access(settings):
    with FakeShopifyAdmin(token="shpat_test") as other:
        settings.SHOPIFY_ADMIN_URL = other.url
        with pytest.raises(shopify_api.ContractNotReadable, match=r"read_own_subscription_contracts.*ACCESS_DENIED"):
            shopify_api.fetch_contract(settings, "402440842")


def test_with_contracts_not_owned_no_contract_is_asked_for(admin, settings):
    settings.SHOPIFY_OWNS_CONTRACTS = False
    payload = sample("subscription_billing_attempts_failure")
    assert shopify.ENRICH["subscription_billing_attempts/failure"](payload, settings) == payload
    assert admin.requests == []


def test_a_wrong_token_raises(admin, settings):
    settings.SHOPIFY_ACCESS_TOKEN = "shpat_wrong"
    with pytest.raises(ShopifyAPIError, match="HTTP 401: .*Invalid API key"):
        shopify.ENRICH["subscription_contracts/update"](sample("subscription_contracts_update"), settings)


def test_an_envelope_read_back_naive_from_sqlite_still_compares(admin, settings):
    admin.hold(BILLED_CONTRACT)
    enriched = shopify.ENRICH["subscription_billing_attempts/success"](
        sample("subscription_billing_attempts_success"), settings)
    envelope = Envelope(event_id="e", topic="subscription_billing_attempts/success", shop=SHOP,
                        triggered_at=TRIGGERED.replace(tzinfo=None))
    subscription, paid = shopify.TOPICS["subscription_billing_attempts/success"](enriched, envelope)
    assert paid.data["paid_at"] == TRIGGERED
    assert subscription.occurred_at == TRIGGERED


def test_a_silent_admin_api_times_out(settings, monkeypatch):
    import socket

    from webhooks.shopify import api as shopify_api

    monkeypatch.setattr(shopify_api, "TIMEOUT_SECONDS", 0.2)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        settings.SHOPIFY_ADMIN_URL = "http://127.0.0.1:%d" % silent.getsockname()[1]
        with pytest.raises(ShopifyAPIError, match="unreachable"):
            shopify_api.fetch_contract(settings, 1)


def test_normalizers_are_pure():
    payload = sample("orders_paid")
    before = copy.deepcopy(payload)
    normalize("orders/paid", payload)
    assert payload == before


# --- contracts another app owns ---------------------------------------------------------------

def test_an_orchestrated_retry_of_an_unowned_contract_is_refused_with_the_reason(settings, admin):
    settings.SHOPIFY_OWNS_CONTRACTS = False
    payment = PaymentState(id=1, subscriber_id=1, source="shopify", source_id="9a453d81", status="failed",
                           subscription_source_id="402440842")
    with pytest.raises(ShopifyAPIError, match="belongs to the store's subscription app.*SHOPIFY_OWNS_CONTRACTS"):
        shopify_billing.create_billing_attempt(settings, payment, "key-1")
    assert admin.requests == []


def test_the_stand_in_refuses_to_bill_another_apps_contract(settings):
    with FakeShopifyBilling(token="shpat_test") as other:
        other.scopes |= {"write_own_subscription_contracts"}
        settings.SHOPIFY_ADMIN_URL = other.url
        payment = PaymentState(id=1, subscriber_id=1, source="shopify", source_id="9a453d81", status="failed",
                           subscription_source_id="402440842")
        with pytest.raises(ShopifyAPIError, match="does not exist"):
            shopify_billing.create_billing_attempt(settings, payment, "key-1")
        assert other.attempts == []


def test_a_billing_runs_burst_of_contract_webhooks_waits_for_the_bucket_and_fetches_every_contract(admin, settings):
    # The app's bucket on the store is nearly spent (a reconciliation's listing beside): the
    # contract query asks 106 points, more than is left, and each fetch pays about 8.
    admin.spend(1950)
    admin.hold(*(f"gid://shopify/SubscriptionContract/{9_000_000 + i}" for i in range(25)))
    payload = sample("subscription_billing_attempts_success")
    enriched = [shopify.ENRICH["subscription_billing_attempts/success"](
        {**payload, "subscription_contract_id": 9_000_000 + i, "admin_graphql_api_subscription_contract_id": None},
        settings) for i in range(25)]
    assert [e["contract"]["id"] for e in enriched] == [
        f"gid://shopify/SubscriptionContract/{9_000_000 + i}" for i in range(25)]
    # The hub waited for the bucket, as its answers said, rather than ask into a THROTTLED.
    assert admin.throttled <= 1


def test_reconciliation_reads_a_contracts_renewal_again_and_leaves_out_what_shopify_refuses(admin, settings):
    admin.hold(SAMPLE_CONTRACT)
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    client = shopify_backfill.Client(settings)
    [before] = client.renewals(["402440842"], now)
    admin.skip(SAMPLE_CONTRACT, 1)
    [after] = client.renewals(["402440842"], now)
    assert before.updated_at == now and before.payload["billing_cycles"][0]["skipped"] is False
    assert after.event_id != before.event_id  # another renewal, stored once more
    admin.errors = [{"message": "Field 'x' doesn't exist on type 'SubscriptionContract'",
                     "extensions": {"code": "undefinedField"}}]
    assert client.renewals(["402440842"], now) == []  # refused: left out, the others still read
    admin.errors = INTERNAL_ERROR
    with pytest.raises(shopify_api.ShopifyAPIError):
        client.renewals(["402440842"], now)  # Shopify's trouble: the pass asks again next time

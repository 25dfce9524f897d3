"""Chargebee in dunning mode `orchestrate`: on each retry day the hub asks Chargebee to collect
the unpaid invoice (POST /api/v2/invoices/{id}/collect_payment), once per retry, with
Chargebee's idempotency key; against the stand-in."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest
import requests

from hub.sync import retries
from hub.sync.inbox import drain_inbox
from standins.chargebee import FakeChargebee
from tests.hub.sync.rules.test_orchestrate import (  # noqa: F401 - the fixture
    dashboard_text,
    orchestrate,
    retry_reasons,
    sweep_days,
    sweep_until_a_retry,
)
from tests.hub.web.conftest import add_staff, log_in
from tests.samples import load_sample, post

KEY = "cb_test_orch"


def unpaid_invoice(failed: dict) -> dict:
    """The invoice of a payment_failed sample as Chargebee holds it."""
    return dict(failed["content"]["invoice"])


def collect(cb: FakeChargebee, invoice_id: str, key: str | None):
    headers = {"chargebee-idempotency-key": key} if key else {}
    return requests.post(f"{cb.url}/api/v2/invoices/{invoice_id}/collect_payment", auth=(KEY, ""),
                         headers=headers, timeout=5)


def test_standin_collects_once_per_idempotency_key_and_says_it_replayed():
    with FakeChargebee(api_key=KEY) as cb:
        cb.invoices.append(unpaid_invoice(load_sample("chargebee/payment_failed.json")))
        first = collect(cb, "1057", "retry-1")
        again = collect(cb, "1057", "retry-1")
        paid_already = collect(cb, "1057", "retry-2")
    assert first.status_code == 200 and first.json()["invoice"]["status"] == "paid"
    assert again.json() == first.json() and again.headers["chargebee-idempotency-replayed"] == "true"
    assert paid_already.status_code == 400
    assert paid_already.json()["api_error_code"] == "invalid_state_for_request"
    assert cb.attempts == [("1057", "retry-1")]


def test_standin_declines_with_a_payment_error_and_refuses_long_keys():
    with FakeChargebee(api_key=KEY) as cb:
        cb.invoices.append(unpaid_invoice(load_sample("chargebee/payment_failed.json")))
        cb.declines.add("1057")
        declined = collect(cb, "1057", "retry-1")
        too_long = collect(cb, "1057", "k" * 101)
    assert declined.status_code == 400
    assert (declined.json()["type"], declined.json()["api_error_code"]) == ("payment", "payment_processing_failed")
    assert too_long.status_code == 400 and cb.attempts == [("1057", "retry-1")]


def test_chargebee_invoice_is_collected_on_each_retry_day_once(client, orchestrate):
    hub = orchestrate
    failed = load_sample("chargebee/payment_failed.json")
    with FakeChargebee(api_key=KEY) as cb:
        cb.invoices.append(unpaid_invoice(failed))
        cb.declines.add("1057")  # every retry is declined: the hub keeps to its cadence
        hub.settings.CHARGEBEE_API_KEY, hub.settings.CHARGEBEE_API_BASE = KEY, cb.url
        post(client, "chargebee", failed)
        drain_inbox(hub.storage, hub.settings)
        failed_on = datetime.fromtimestamp(failed["occurred_at"], timezone.utc).date()
        sweep_days(hub, failed_on + timedelta(days=1), 21)  # each morning swept twice
    keys = [f"1:payment-retry:chargebee:1057/retry-{n}" for n in (1, 2, 3)]
    calls = [c for c in cb.calls if c.operation == "collect_payment"]
    assert [c.headers.get("chargebee-idempotency-key") for c in calls] == keys
    assert cb.attempts == [("1057", key) for key in keys]
    assert retry_reasons(hub) == [f"retry {n} of 3 due today; Chargebee tried the card again: declined (Payment "
                                  "cannot be collected. Error message: (card_declined) Your card was declined.)"
                                  for n in (1, 2, 3)]


@pytest.mark.parametrize("status", [503, 408])  # its trouble, or a request timed out on its side
def test_a_collection_chargebee_did_not_answer_is_asked_again_and_charged_once(client, orchestrate, status):
    hub = orchestrate
    failed = load_sample("chargebee/payment_failed.json")
    with FakeChargebee(api_key=KEY) as cb:
        cb.invoices.append(unpaid_invoice(failed))
        hub.settings.CHARGEBEE_API_KEY, hub.settings.CHARGEBEE_API_BASE = KEY, cb.url
        post(client, "chargebee", failed)
        drain_inbox(hub.storage, hub.settings)
        failed_on = datetime.fromtimestamp(failed["occurred_at"], timezone.utc).date()
        cb.fail(status, times=1)  # on the first retry day
        day = sweep_until_a_retry(hub, failed_on)
        assert cb.attempts == [] and f"Chargebee did not answer (invoices/1057/collect_payment: HTTP {status}" in \
            retry_reasons(hub)[0]
        # The backstop two minutes later (the sample's days lie ahead of the real clock).
        retries.ask_due(hub.storage, hub.settings, datetime.combine(day, time(6, 2), tzinfo=timezone.utc))
    assert cb.attempts == [("1057", "1:payment-retry:chargebee:1057/retry-1")]
    assert retry_reasons(hub)[0].endswith("; Chargebee was asked to charge again")


def test_chargebee_dunning_retrying_beside_the_hub_is_shown_with_where_to_turn_it_off(client, orchestrate):
    hub = orchestrate
    hub.settings.CHARGEBEE_API_KEY, hub.settings.CHARGEBEE_SITE = KEY, "acme"
    # Chargebee's own dunning is on: the failed invoice is in_progress with its next_retry_at, tomorrow.
    failed = load_sample("chargebee/payment_failed.json")
    failed["content"]["invoice"]["next_retry_at"] = int((datetime.now(timezone.utc) + timedelta(days=1)).timestamp())
    post(client, "chargebee", failed)
    drain_inbox(hub.storage, hub.settings)
    add_staff(hub, "olive@shop.test", "operator")
    log_in(client, "olive@shop.test")
    text = dashboard_text(client)
    assert "Chargebee also retries failed payments on its own schedule: 1 failed payment has a retry " \
           "announced by Chargebee (the latest: 1057 on " in text
    assert "(Settings → Configure Chargebee → Dunning for online/offline payments)" in text
    assert 'hub_payment_retries_platform_scheduled{source="chargebee"} 1.0' in \
        client.get("/metrics").get_data(as_text=True)

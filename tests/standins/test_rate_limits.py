"""The stand-ins hold the tools' documented limits as the tools do:
counted as the requests arrive, refused with 429 past them, the refusal not counted."""
from __future__ import annotations

import time

import requests

from standins.activecampaign import FakeActiveCampaign
from standins.chargebee import FakeChargebee
from standins.hubspot import FakeHubSpot
from standins.stripe import FakeStripe


def test_activecampaign_takes_five_requests_a_second_and_asks_for_a_pause_past_them():
    with FakeActiveCampaign(api_key="ac") as ac:
        answers = [requests.get(f"{ac.url}/api/3/fields", headers={"Api-Token": "ac"}, timeout=5)
                   for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert answers[4].headers["RateLimit-Limit"] == "5" and answers[4].headers["RateLimit-Remaining"] == "0"
        assert answers[5].headers["Retry-After"] == "1" and answers[5].json()["message"]
        time.sleep(1.0)
        again = requests.get(f"{ac.url}/api/3/fields", headers={"Api-Token": "ac"}, timeout=5)
        assert again.status_code == 200 and ac.throttled == 1


def test_hubspot_takes_a_hundred_requests_per_rolling_ten_seconds():
    with FakeHubSpot(token="pat") as hubspot:
        auth = {"Authorization": "Bearer pat"}
        statuses = [requests.get(f"{hubspot.url}/crm/v3/properties/contacts", headers=auth, timeout=5).status_code
                    for _ in range(101)]
        assert statuses == [200] * 100 + [429]
        refused = requests.get(f"{hubspot.url}/crm/v3/properties/contacts", headers=auth, timeout=5)
        assert refused.status_code == 429 and refused.json()["policyName"] == "TEN_SECONDLY_ROLLING"
        assert refused.json()["message"] == "You have reached your ten_secondly_rolling limit."
        assert refused.json()["errorType"] == "RATE_LIMIT" and hubspot.throttled == 2
        # No Retry-After: the wait is for the client to work out, from the policy and headers.
        assert "Retry-After" not in refused.headers
        assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert refused.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_a_stand_in_told_so_holds_no_limit():
    with FakeActiveCampaign(api_key="ac", rate_limited=False) as ac:
        answers = [requests.get(f"{ac.url}/api/3/fields", headers={"Api-Token": "ac"}, timeout=5).status_code
                   for _ in range(8)]
        assert answers == [200] * 8


def test_chargebee_takes_its_plans_requests_a_minute_then_refuses_without_a_retry_after():
    with FakeChargebee(api_key="cb", rate_per_minute=150) as cb:  # a test site, or Starter
        with requests.Session() as http:
            http.auth = ("cb", "")
            statuses = [http.get(f"{cb.url}/api/v2/customers", timeout=5).status_code for _ in range(151)]
            refused = http.get(f"{cb.url}/api/v2/invoices", timeout=5)  # one count for every API
        assert statuses == [200] * 150 + [429] and refused.status_code == 429
        assert refused.json()["api_error_code"] == "api_request_limit_exceeded"
        assert "Retry-After" not in refused.headers and cb.throttled == 2


def test_stripe_takes_its_accounts_requests_a_second_then_refuses_without_a_retry_after():
    with FakeStripe(key="sk_test_k", rate_per_second=25) as stripe_api:  # a sandbox's limit
        with requests.Session() as http:
            http.headers["Authorization"] = "Bearer sk_test_k"
            statuses = [http.get(f"{stripe_api.url}/v1/customers", timeout=5).status_code for _ in range(26)]
            refused = http.get(f"{stripe_api.url}/v1/account", timeout=5)  # one count for the whole API
        assert statuses == [200] * 25 + [429] and refused.status_code == 429
        assert refused.json()["error"]["message"].startswith("Request rate limit exceeded")
        assert "Retry-After" not in refused.headers and stripe_api.throttled == 2

"""HubSpot: batch upsert by email, custom properties, lifecyclestage only moved forward."""
from __future__ import annotations

import pytest
import requests

from connectors import validate_mapping
from connectors.base import Failed, RetryAfter, Sent
from connectors.hubspot import HubSpotConnector
from connectors.ratelimit import Limiter
from standins.hubspot import HUB_PROPERTIES, LIFECYCLE_STAGES, FakeHubSpot
from tests.connectors.conftest import consent_item, erase_item, profile_item


def connector(world, **mapping) -> HubSpotConnector:
    return HubSpotConnector(world.settings, field_map=validate_mapping(HubSpotConnector, mapping, "test"))


def test_contacts_are_upserted_by_email_with_hub_properties_as_text(hubspot):
    results = hubspot.connector().push_batch([profile_item(1, "ada@example.com")])
    assert all(isinstance(r, Sent) and r.request_id for r in results.values())
    [upsert] = hubspot.fake.operations("upsert")
    [contact] = upsert.body["inputs"]
    assert (contact["idProperty"], contact["id"]) == ("email", "ada@example.com")
    assert upsert.headers["Authorization"].startswith("Bearer ")
    stored = hubspot.fake.contacts["ada@example.com"]
    assert stored["hub_stage"] == "engaged" and stored["hub_mrr"] == "2500" and stored["firstname"] == "Ada"


def test_batch_size_is_a_setting(hubspot):
    items = [profile_item(i, f"p{i}@example.com") for i in range(250)]
    assert all(isinstance(r, Sent) for r in hubspot.connector().push_batch(items).values())
    assert [len(c.body["inputs"]) for c in hubspot.fake.operations("upsert")] == [100, 100, 50]
    hubspot.fake.calls.clear()
    connector(hubspot, batch_size=40).push_batch(items[:100])
    assert [len(c.body["inputs"]) for c in hubspot.fake.operations("upsert")] == [40, 40, 20]


def test_lifecyclestage_only_moves_forward(hubspot):
    hubspot.fake.contacts.update({"ahead@example.com": {"email": "ahead@example.com", "lifecyclestage": "evangelist"},
                                  "lead@example.com": {"email": "lead@example.com", "lifecyclestage": "lead"},
                                  "other@example.com": {"email": "other@example.com", "lifecyclestage": "other"}})
    hubspot.fake.ids.update({e: str(i) for i, e in enumerate(hubspot.fake.contacts)})
    items = [profile_item(1, "ahead@example.com", stage="at_risk"),
             profile_item(2, "lead@example.com", stage="engaged"),
             profile_item(3, "new@example.com", stage="new"),
             profile_item(4, "other@example.com", stage="loyal")]
    assert all(isinstance(r, Sent) for r in hubspot.connector().push_batch(items).values())
    assert [c.operation for c in hubspot.fake.calls] == ["read", "upsert"]
    sent = {i["id"]: i["properties"].get("lifecyclestage") for i in hubspot.fake.operations("upsert")[0].body["inputs"]}
    assert sent == {"ahead@example.com": None, "lead@example.com": "customer", "new@example.com": "customer",
                    "other@example.com": None}
    assert hubspot.fake.contacts["ahead@example.com"]["lifecyclestage"] == "evangelist"


def test_no_lifecycle_mapping_means_no_read(hubspot):
    connector(hubspot, lifecycle_stages={}).push_batch([profile_item()])
    assert [c.operation for c in hubspot.fake.calls] == ["upsert"]


def test_one_invalid_email_fails_alone_with_hubspots_message(hubspot):
    items = [profile_item(1, "good@example.com"), profile_item(2, "bad@"), profile_item(3, "also@example.com")]
    results = connector(hubspot, lifecycle_stages={}).push_batch(items)
    assert isinstance(results[1], Sent) and isinstance(results[3], Sent)
    assert isinstance(results[2], Failed) and results[2].message == "Email address bad@ is invalid"
    assert set(hubspot.fake.contacts) == {"good@example.com", "also@example.com"}


def test_a_lifecycle_stage_the_account_does_not_have_fails_its_contacts_alone_with_hubspots_message():
    from hub.config import Settings

    stages = {value: label for value, label in LIFECYCLE_STAGES.items() if value != "evangelist"}
    with FakeHubSpot(token="pat", lifecycle_stages=stages) as fake:
        settings = Settings.from_env(env={}, overrides={"HUBSPOT_ACCESS_TOKEN": "pat", "HUBSPOT_BASE_URL": fake.url})
        mapping = {"lifecycle_stages": {"new": "customer", "loyal": "evangelist"}}  # as mappings/hubspot.yaml
        c = HubSpotConnector(settings, field_map=validate_mapping(HubSpotConnector, mapping, "test"))
        results = c.push_batch([profile_item(1, "loyal@example.com", stage="loyal"),
                                profile_item(2, "new@example.com", stage="new"),
                                profile_item(3, "fan@example.com", stage="loyal")])
    # HubSpot refused the whole batch for the stage; the contacts carrying it fail with its
    # words, and the other is written by a second upsert.
    assert [c.operation for c in fake.calls].count("upsert") == 2
    assert isinstance(results[2], Sent) and set(fake.contacts) == {"new@example.com"}
    for refused in (results[1], results[3]):
        assert isinstance(refused, Failed) and refused.http_status == 400
        assert refused.message.startswith("evangelist was not one of the allowed options: [")


def test_consent_given_subscribes_and_withdrawn_unsubscribes(hubspot):
    c = connector(hubspot, subscription_id=FakeHubSpot.MARKETING)
    key = ("ada@example.com", FakeHubSpot.MARKETING)
    assert isinstance(c.push_batch([consent_item(3, state="subscribed")])[3], Sent)
    assert hubspot.fake.subscriptions[key] == "SUBSCRIBED"
    [call] = hubspot.fake.operations("subscribe")
    assert call.body["legalBasis"] == "CONSENT_WITH_NOTICE" and call.body["emailAddress"] == "ada@example.com"
    assert isinstance(c.push_batch([consent_item(4, state="unsubscribed")])[4], Sent)
    assert hubspot.fake.subscriptions[key] == "NOT_SUBSCRIBED"
    # HubSpot's v3 API refuses to resubscribe someone who opted out: a permanent failure.
    again = c.push_batch([consent_item(5, state="subscribed")])[5]
    assert isinstance(again, Failed) and "opted out" in again.message


def test_consent_hubspot_already_holds_is_sent_not_failed(hubspot):
    c = connector(hubspot, subscription_id=FakeHubSpot.MARKETING)
    # Ada subscribed through a HubSpot form before the store's consent reached the hub.
    hubspot.fake.subscriptions[("ada@example.com", FakeHubSpot.MARKETING)] = "SUBSCRIBED"
    given = c.push_batch([consent_item(3, state="subscribed")])[3]
    assert isinstance(given, Sent), given
    assert given.message == "HubSpot already had this address subscribed"
    assert isinstance(c.push_batch([consent_item(4, state="unsubscribed")])[4], Sent)
    # A withdrawal sent again (its first answer lost on the way) is done, not a failure.
    again = c.push_batch([consent_item(5, state="unsubscribed")])[5]
    assert isinstance(again, Sent) and again.message == "HubSpot already had this address unsubscribed"
    assert [call.status for call in hubspot.fake.calls] == [400, 200, 400]


def test_install_names_a_subscription_type_hubspot_does_not_have(hubspot):
    with pytest.raises(RuntimeError, match=f"no subscription type 999 .*{FakeHubSpot.MARKETING} Marketing"):
        connector(hubspot, subscription_id="999").install()
    assert connector(hubspot, subscription_id=FakeHubSpot.MARKETING).install() == []


def test_gdpr_delete_of_an_email_hubspot_does_not_know_blocklists_it(hubspot):
    result = hubspot.connector().push_batch([erase_item(4, email="stranger@example.com")])[4]
    assert isinstance(result, Sent) and result.http_status == 204
    assert hubspot.fake.blocked == {"stranger@example.com"}


def test_missing_properties_fail_with_hubspots_message_until_installed():
    with FakeHubSpot(token="pat", installed=False) as fake:
        from hub.config import Settings

        settings = Settings.from_env(env={}, overrides={"HUBSPOT_ACCESS_TOKEN": "pat", "HUBSPOT_BASE_URL": fake.url})
        c = HubSpotConnector(settings, field_map=validate_mapping(HubSpotConnector, {}, "test"))
        [result] = c.push_batch([profile_item()]).values()
        assert isinstance(result, Failed) and "PROPERTY_DOESNT_EXIST" in result.message
        assert sorted(c.install()) == sorted(HUB_PROPERTIES)
        assert c.install() == []
        kinds = {call.body["name"]: call.body["type"] for call in fake.operations("create_property")}
        assert kinds["hub_mrr"] == "number" and kinds["hub_next_renewal_at"] == "datetime"
        [result] = c.push_batch([profile_item()]).values()
        assert isinstance(result, Sent)


def test_past_the_ten_second_limit_the_push_waits_out_hubspots_window_though_no_retry_after_says_so(hubspot):
    """HubSpot counts an account's requests together, so another app spends the hub's 100
    per 10 s too. Its 429 names the policy but carries no Retry-After."""
    auth = {"Authorization": f"Bearer {hubspot.settings.HUBSPOT_ACCESS_TOKEN}"}
    with requests.Session() as other:
        for _ in range(100):
            assert other.get(f"{hubspot.fake.url}/crm/v3/properties/contacts", headers=auth).status_code == 200
    limiter = Limiter()
    c = hubspot.connector()
    c.use_limiter(limiter, rate_wait=0.01)  # as a worker's push
    results = c.push([profile_item(i, f"p{i}@example.com") for i in range(3)] + [erase_item(7)])
    assert results[0].http_status == 429 and results[0].seconds == 10, results
    assert "ten_secondly_rolling" in results[0].message
    # The erase after it is held, unsent, for the rest of the window; so is every worker's
    # next HubSpot request.
    assert isinstance(results[7], RetryAfter) and results[7].http_status is None and results[7].seconds > 9
    assert limiter.take("hubspot:api") > 9
    assert [c.status for c in hubspot.fake.calls[100:]] == [429]  # the hub's one request


@pytest.mark.parametrize("policy, retry_after, wait", [
    ("TEN_SECONDLY_ROLLING", None, 10.0),
    ("SECONDLY", None, 1.0),  # the search endpoints' limit
    ("DAILY", None, 3600.0),  # asked again each hour until the account's midnight
    ("DAILY", 120, 120.0),  # a Retry-After, where HubSpot gives one, wins
])
def test_a_429_without_retry_after_waits_for_the_limit_it_names(hubspot, policy, retry_after, wait):
    hubspot.fake.fail(429, retry_after=retry_after, times=1, body={
        "status": "error", "message": "You have reached your limit.", "errorType": "RATE_LIMIT",
        "policyName": policy})
    results = hubspot.connector().push_batch([erase_item(1)])
    assert results[1].http_status == 429 and results[1].seconds == wait

"""Klaviyo: the shapes the SDK sends (validated by the stand-in against Klaviyo's OpenAPI documents)."""
from __future__ import annotations

import time

import pytest
import requests

from connectors import klaviyo as module
from connectors import validate_mapping
from connectors.base import Failed, RetryAfter, Sent
from connectors.klaviyo import KlaviyoConnector, klaviyo_message
from connectors.ratelimit import Limiter
from tests.connectors.conftest import SECRET, consent_item, event_item, profile_item

JOB_READS = ("get_bulk_import_profiles_job", "get_errors_for_bulk_import_profiles_job")


def connector(world, **mapping) -> KlaviyoConnector:
    return KlaviyoConnector(world.settings, field_map=validate_mapping(KlaviyoConnector, mapping, "test"))


def writes(fake) -> list:
    """The requests that change something at Klaviyo (not the reads of an import job)."""
    return [c for c in fake.calls if c.operation not in JOB_READS]


def test_requests_go_to_the_configured_base_url_with_key_and_revision(klaviyo):
    klaviyo.connector().push_batch([profile_item()])
    [call] = klaviyo.fake.calls
    assert call.operation == "create_or_update_profile"
    assert call.headers["Authorization"].startswith("Klaviyo-API-Key ")
    assert call.headers["revision"]


def test_a_few_profiles_are_created_or_updated_one_by_one_under_the_mapped_names(klaviyo):
    results = klaviyo.connector().push_batch([profile_item(1, "a@example.com"),
                                              profile_item(2, "b@example.com", stage="loyal")])
    assert all(isinstance(r, Sent) for r in results.values())
    assert [c.operation for c in klaviyo.fake.calls] == ["create_or_update_profile"] * 2
    profile = klaviyo.fake.profile("b@example.com")
    assert profile["properties"] == {
        "hub_stage": "loyal", "hub_health_score": 72, "hub_tier": "Silver", "hub_points": 120,
        "hub_subscription_status": "active", "hub_plan": "Coffee monthly", "hub_mrr": 2500,
        "hub_next_renewal_at": "2026-12-01T12:00:00+00:00", "hub_lifetime_value": 15000}
    assert (profile["first_name"], profile["phone_number"]) == ("Ada", "+16135550002")
    attributes = klaviyo.fake.calls[0].body["data"]["attributes"]
    assert "subscriptions" not in attributes  # consent is never inferred from a profile update


def test_renamed_and_unmapped_fields(klaviyo):
    c = connector(klaviyo, fields={"stage": "lifecycle", "mrr": None})
    c.push_batch([profile_item()])
    properties = klaviyo.fake.profile("ada@example.com")["properties"]
    assert properties["lifecycle"] == "engaged" and "hub_mrr" not in properties and "hub_stage" not in properties


def test_many_profiles_go_in_one_bulk_import_job(klaviyo):
    items = [profile_item(i, f"p{i}@example.com") for i in range(1, 251)]
    results = klaviyo.connector().push_batch(items)
    assert all(isinstance(r, Sent) and r.http_status == 202 for r in results.values())
    [call] = writes(klaviyo.fake)
    assert call.operation == "bulk_import_profiles"
    assert len(klaviyo.fake.profiles) == 250


def test_a_bulk_import_keeps_a_property_sent_as_null_as_klaviyo_does(klaviyo):
    c = klaviyo.connector()
    c.push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    c.push_batch([profile_item(i, f"p{i}@example.com", plan=None) for i in range(12)])
    assert [call.operation for call in writes(klaviyo.fake)] == ["bulk_import_profiles"] * 2
    assert klaviyo.fake.profile("p1@example.com")["properties"]["hub_plan"] == "Coffee monthly"


def test_profiles_that_clear_a_property_go_one_by_one_and_unset_it(klaviyo):
    c = klaviyo.connector()
    c.push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    klaviyo.fake.calls.clear()
    cancelled = profile_item(0, "p0@example.com", plan=None, next_renewal_at=None, subscription_status="canceled")
    cancelled.payload["cleared"] = ["next_renewal_at", "plan"]
    results = c.push_batch([cancelled] + [profile_item(i, f"p{i}@example.com", tier="Gold") for i in range(1, 12)])
    assert all(isinstance(r, Sent) for r in results.values())
    assert sorted(c.operation for c in writes(klaviyo.fake)) == ["bulk_import_profiles", "create_or_update_profile"]
    [single] = klaviyo.fake.operations("create_or_update_profile")
    assert single.body["data"]["meta"] == {"patch_properties": {"unset": ["hub_plan", "hub_next_renewal_at"]}}
    properties = klaviyo.fake.profile("p0@example.com")["properties"]
    assert "hub_plan" not in properties and "hub_next_renewal_at" not in properties
    assert properties["hub_subscription_status"] == "canceled"
    assert klaviyo.fake.profile("p1@example.com")["properties"]["hub_tier"] == "Gold"
    assert klaviyo.fake.invalid == []


def test_bulk_imports_are_cut_at_the_profile_and_byte_limits(klaviyo, monkeypatch):
    monkeypatch.setattr(module, "MAX_IMPORT_PROFILES", 5)
    klaviyo.connector().push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    assert [len(c.body["data"]["attributes"]["profiles"]["data"]) for c in writes(klaviyo.fake)] == [5, 5, 2]
    klaviyo.fake.calls.clear()
    monkeypatch.setattr(module, "MAX_IMPORT_PROFILES", 10_000)
    monkeypatch.setattr(module, "MAX_IMPORT_BYTES", 1500)
    klaviyo.connector().push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    assert all(len(c.raw) < 2500 for c in writes(klaviyo.fake)) and len(writes(klaviyo.fake)) > 2
    assert sum(len(c.body["data"]["attributes"]["profiles"]["data"]) for c in writes(klaviyo.fake)) == 12


def test_stage_lists_in_bulk_jobs_and_one_by_one(klaviyo):
    c = connector(klaviyo, stage_lists={"loyal": "LoyalList"})
    c.push_batch([profile_item(i, f"p{i}@example.com", stage="loyal" if i % 2 else "new") for i in range(20)])
    jobs = klaviyo.fake.operations("bulk_import_profiles")
    assert len(jobs) == 2  # one per list (and one without)
    assert [j.body["data"].get("relationships") for j in jobs].count(
        {"lists": {"data": [{"type": "list", "id": "LoyalList"}]}}) == 1
    assert len(klaviyo.fake.lists["LoyalList"]) == 10
    c.push_batch([profile_item(99, "solo@example.com", stage="loyal")])
    assert klaviyo.fake.profile_id("solo@example.com") in klaviyo.fake.lists["LoyalList"]
    assert klaviyo.fake.calls[-1].operation == "add_profiles_to_list"


def test_a_trigger_is_an_event_whose_unique_id_is_the_trigger_key(klaviyo):
    klaviyo.connector().push_batch([event_item(key="7:renewal-7d:2026-12-01")])
    [event] = klaviyo.fake.events
    assert event["unique_id"] == "7:renewal-7d:2026-12-01"
    assert event["metric"] == "Renewal Reminder" and event["properties"]["days_before"] == 7
    assert event["backfill"] is False


def test_a_resent_event_is_dropped_by_klaviyo(klaviyo):
    c = klaviyo.connector()
    c.push_batch([event_item()])
    c.push_batch([event_item()])
    assert len(klaviyo.fake.events) == 1 and klaviyo.fake.duplicate_events == 1


def test_without_a_unique_id_klaviyo_keys_an_event_by_its_time_to_the_second(klaviyo):
    def untagged(delivery_id, at):
        item = event_item(delivery_id)
        item.payload.update(unique_id=None, time=at)
        return item

    c = klaviyo.connector()
    for delivery_id, at in enumerate(("2026-11-24T12:00:00.100+00:00", "2026-11-24T12:00:00.900+00:00",
                                      "2026-11-24T12:00:01+00:00"), start=1):
        assert isinstance(c.push_batch([untagged(delivery_id, at)])[delivery_id], Sent)
    assert len(klaviyo.fake.events) == 2 and klaviyo.fake.duplicate_events == 1


def test_every_profile_import_counts_as_a_write_even_when_nothing_changes(klaviyo):
    c = klaviyo.connector()
    c.push_batch([profile_item(1, "a@example.com")])  # one by one
    c.push_batch([profile_item(i, f"{'a' if i == 1 else i}@example.com") for i in range(1, 11)])  # bulk
    assert len(klaviyo.fake.profiles) == 10
    assert klaviyo.fake.profile_writes[klaviyo.fake.profile_id("a@example.com")] == 2
    assert sum(klaviyo.fake.profile_writes.values()) == 11


def test_history_events_do_not_start_flows(klaviyo):
    klaviyo.connector().push_batch([event_item(history=True)])
    assert klaviyo.fake.events[0]["backfill"] is True


def test_many_events_go_in_bulk_without_a_unique_id_twice_per_request(klaviyo):
    items = [event_item(100 + i, f"p{i % 7}@example.com", subscriber_id=i % 7, key=f"{i % 7}:rule:{i}")
             for i in range(30)]
    items.append(event_item(200, "p1@example.com", subscriber_id=1, key="1:rule:1"))  # same key again
    results = klaviyo.connector().push_batch(items)
    assert all(isinstance(r, Sent) for r in results.values())
    calls = klaviyo.fake.operations("bulk_create_events")
    assert len(calls) == 2
    for call in calls:
        ids = [e["attributes"]["unique_id"] for entry in call.body["data"]["attributes"]["events-bulk-create"]["data"]
               for e in entry["attributes"]["events"]["data"]]
        assert len(ids) == len(set(ids))
    assert len(klaviyo.fake.events) == 30


def test_one_malformed_email_fails_only_its_own_events_of_a_bulk_request(klaviyo):
    """Klaviyo refuses a bulk request whole for one bad profile, naming it in a source.pointer:
    its events fail with Klaviyo's words, the others go again at once."""
    items = [event_item(100 + i, f"p{i}@example.com", subscriber_id=i, key=f"{i}:rule:{i}") for i in range(12)]
    items.append(event_item(200, "p3@example.com", subscriber_id=3, key="3:rule:other"))
    items[3].payload["email"] = items[12].payload["email"] = "p3.example.com"
    results = klaviyo.connector().push_batch(items)
    assert {i for i, r in results.items() if isinstance(r, Failed)} == {103, 200}
    assert results[103].message == "Invalid email address" and results[103].http_status == 400
    assert all(isinstance(r, Sent) for i, r in results.items() if i not in (103, 200))
    assert len(klaviyo.fake.events) == 11
    assert [c.status for c in klaviyo.fake.operations("bulk_create_events")] == [400, 202]


def test_a_backfilled_subscribe_is_a_historical_import_with_the_consents_own_time(klaviyo):
    klaviyo.connector().push_batch([consent_item(3, "ada@example.com", history=True)])
    [call] = klaviyo.fake.calls
    attributes = call.body["data"]["attributes"]
    assert call.operation == "bulk_subscribe_profiles" and attributes["historical_import"] is True
    [profile] = attributes["profiles"]["data"]
    assert profile["attributes"]["subscriptions"] == {
        "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2026-10-01T09:30:00+00:00"}}}
    pid = klaviyo.fake.profile_id("ada@example.com")
    assert klaviyo.fake.consent[pid] == {"email": {"consent": "SUBSCRIBED", "consented_at": "2026-10-01T09:30:00+00:00",
                                                   "historical": True}}


def test_a_consent_given_now_goes_through_the_lists_opt_in_and_its_flows(klaviyo):
    klaviyo.fake.double_opt_in_lists.add("Confirmed")
    c = connector(klaviyo, consent_lists={"email": "Confirmed"})
    c.push_batch([consent_item(3, "ada@example.com")])
    pid = klaviyo.fake.profile_id("ada@example.com")
    assert klaviyo.fake.confirmations == [(pid, "Confirmed")]  # asked to confirm, not subscribed yet
    assert pid not in klaviyo.fake.consent
    c = connector(klaviyo, consent_lists={"email": "Newsletter"})
    c.push_batch([consent_item(4, "bea@example.com"), consent_item(5, "cy@example.com", history=True)])
    live, backfilled = klaviyo.fake.profile_id("bea@example.com"), klaviyo.fake.profile_id("cy@example.com")
    assert klaviyo.fake.list_flows == [(live, "Newsletter")]  # "Added to list" starts for the live one only
    assert klaviyo.fake.consent[live]["email"]["historical"] is False
    assert klaviyo.fake.consent[backfilled]["email"] == {
        "consent": "SUBSCRIBED", "consented_at": "2026-10-01T09:30:00+00:00", "historical": True}
    assert klaviyo.fake.invalid == []


def test_sms_consent_names_the_phone_and_only_sms(klaviyo):
    klaviyo.connector().push_batch([consent_item(3, None, "subscribed", "sms", phone="+16135550135")])
    profile = klaviyo.fake.calls[0].body["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    assert profile["phone_number"] == "+16135550135" and list(profile["subscriptions"]) == ["sms"]
    assert "email" not in profile


def test_unsubscribe_touches_only_the_channel_and_no_list_unless_configured(klaviyo):
    klaviyo.connector().push_batch([consent_item(3, state="unsubscribed")])
    [call] = klaviyo.fake.calls
    assert call.operation == "bulk_unsubscribe_profiles"
    assert "relationships" not in call.body["data"]
    [profile] = call.body["data"]["attributes"]["profiles"]["data"]
    assert profile["attributes"]["subscriptions"] == {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}


@pytest.mark.parametrize("state", ["subscribed", "unsubscribed"])
def test_one_malformed_email_fails_only_its_own_consent_of_a_bulk_job(klaviyo, state):
    items = [consent_item(i, f"c{i}@example.com", state=state) for i in range(1, 6)]
    items[1].payload["email"] = "c2.example.com"
    results = klaviyo.connector().push_batch(items)
    assert isinstance(results[2], Failed) and results[2].message == "Invalid email address"
    assert all(isinstance(results[i], Sent) for i in (1, 3, 4, 5))
    consent = {"subscribed": "SUBSCRIBED", "unsubscribed": "UNSUBSCRIBED"}[state]
    assert [klaviyo.fake.consent[klaviyo.fake.profile_id(f"c{i}@example.com")]["email"]["consent"]
            for i in (1, 3, 4, 5)] == [consent] * 4
    assert klaviyo.fake.profile_id("c2.example.com") is None


def test_consent_jobs_respect_klaviyos_per_request_limits(klaviyo):
    items = [consent_item(i, f"u{i}@example.com", "unsubscribed") for i in range(150)]
    items += [consent_item(1000 + i, f"s{i}@example.com") for i in range(30)]
    results = klaviyo.connector().push_batch(items)
    assert all(isinstance(r, Sent) for r in results.values())
    unsubscribed = klaviyo.fake.operations("bulk_unsubscribe_profiles")
    assert [len(c.body["data"]["attributes"]["profiles"]["data"]) for c in unsubscribed] == [100, 50]
    assert len(klaviyo.fake.operations("bulk_subscribe_profiles")) == 1


def test_consent_list_when_configured(klaviyo):
    connector(klaviyo, consent_lists={"email": "Newsletter"}).push_batch([consent_item()])
    assert klaviyo.fake.calls[0].body["data"]["relationships"] == \
        {"list": {"data": {"type": "list", "id": "Newsletter"}}}


def test_the_tools_error_detail_is_the_message(klaviyo):
    klaviyo.fake.fail(400, message="Invalid phone number format.")
    [result] = klaviyo.connector().push_batch([profile_item()]).values()
    assert isinstance(result, Failed) and result.message == "Invalid phone number format."
    assert result.request_id  # Klaviyo's error id, for support
    assert klaviyo_message('{"errors": [{"detail": "a"}, {"detail": "b"}]}') == "a; b"
    assert klaviyo_message("<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_a_429_pauses_the_endpoint_for_every_worker(klaviyo):
    limiter = Limiter(sleep=lambda s: None, max_wait=0.5)
    klaviyo.fake.fail(429, retry_after=30, times=1)
    c = klaviyo.connector(limiter=limiter)
    [first, second] = c.push_batch([profile_item(1, "a@example.com"), profile_item(2, "b@example.com")]).values()
    assert first.http_status == 429 and first.seconds == 30
    assert second.http_status is None and "rate limit" in second.message  # never sent: held back
    assert len(klaviyo.fake.calls) == 1
    assert limiter.take("klaviyo:profile-import") > 25


@pytest.mark.parametrize("count", [1, 12])
def test_profile_with_phone_only(klaviyo, count):
    items = [profile_item(i, None) for i in range(count)]
    for i, item in enumerate(items):
        item.payload["phone"] = f"+1613555{i:04d}"
    results = klaviyo.connector().push_batch(items)
    assert all(isinstance(r, Sent) for r in results.values())


def test_a_bulk_import_marks_each_profile_klaviyo_refused_failed_with_its_message(klaviyo):
    items = [profile_item(i, f"p{i}@example.com") for i in range(1, 13)]
    items[4].payload["email"] = "p5.example.com"
    items[7].payload["phone"] = "613-555-0008"
    results = klaviyo.connector().push_batch(items)
    assert isinstance(results[5], Failed) and results[5].message == "Invalid email address"
    assert isinstance(results[8], Failed)
    assert results[8].message == "Invalid phone number format (Example of a valid format: +12345678901)"
    assert all(isinstance(results[i], Sent) for i in range(1, 13) if i not in (5, 8))
    assert len(klaviyo.fake.profiles) == 10 and klaviyo.fake.profile("p8@example.com") is None
    assert [c.operation for c in klaviyo.fake.calls][-1] == "get_errors_for_bulk_import_profiles_job"


def test_a_bulk_import_with_no_profile_refused_reads_no_errors(klaviyo):
    results = klaviyo.connector().push_batch([profile_item(i, f"p{i}@example.com") for i in range(1, 13)])
    assert all(isinstance(r, Sent) and r.request_id for r in results.values())
    # The finished job counted no failure: one import and its status, one call fewer per job.
    assert [c.operation for c in klaviyo.fake.calls if c.operation != "get_bulk_import_profiles_job"] == [
        "bulk_import_profiles"]


def test_a_bulk_import_is_sent_only_once_klaviyo_has_applied_it(klaviyo):
    klaviyo.fake.job_delay = 0.3
    results = klaviyo.connector().push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    assert all(isinstance(r, Sent) for r in results.values())
    # Every profile is there when the deliveries are marked sent: the 202 alone did not count.
    assert len(klaviyo.fake.profiles) == 12
    polls = klaviyo.fake.operations("get_bulk_import_profiles_job")
    assert len(polls) >= 2 and polls[-1].status == 200


def test_a_bulk_import_not_finished_in_time_is_sent_again_later(klaviyo):
    klaviyo.fake.job_delay = 1.0
    c = klaviyo.connector()
    c.job_wait = 0.2
    results = c.push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    assert all(isinstance(r, RetryAfter) for r in results.values()), results
    assert all("not finished" in r.message for r in results.values())
    assert klaviyo.fake.profiles == {}  # not applied yet, so not sent


def test_past_an_endpoints_burst_klaviyo_answers_429_and_the_connector_waits_as_asked(klaviyo):
    """Klaviyo counts requests per account, so another integration on the same key spends the
    hub's burst too (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling)."""
    headers = {"Authorization": f"Klaviyo-API-Key {SECRET}", "revision": "2025-10-15"}
    job = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "other@example.com"}}]}}}}
    with requests.Session() as other:
        for _ in range(10):  # Bulk Import Profiles: burst 10/s
            assert other.post(f"{klaviyo.fake.url}/api/profile-bulk-import-jobs", json=job,
                              headers=headers).status_code == 202
    slept = []
    limiter = Limiter(sleep=lambda s: (slept.append(s), time.sleep(s)))
    c = klaviyo.connector(limiter=limiter)
    items = [profile_item(i, f"p{i}@example.com") for i in range(12)]
    first = c.push_batch(items)
    assert all(isinstance(r, RetryAfter) and r.http_status == 429 and r.seconds == 1 for r in first.values())
    second = c.push_batch(items)
    assert sum(slept) >= 0.9  # held back for Klaviyo's Retry-After, then sent
    assert all(isinstance(r, Sent) for r in second.values()), second
    assert [c.status for c in klaviyo.fake.operations("bulk_import_profiles")][-2:] == [429, 202]


def test_import_errors_are_read_past_their_first_page(klaviyo):
    items = [profile_item(i, f"p{i}@example.com") for i in range(1, 121)]
    for item in items[:101]:
        item.payload["phone"] = "613-555-0008"  # refused by the job, not by the request
    results = klaviyo.connector().push_batch(items)
    assert sum(isinstance(r, Failed) and r.message.startswith("Invalid phone number") for r in results.values()) == 101
    assert all(isinstance(results[i], Sent) for i in range(102, 121))
    assert len(klaviyo.fake.operations("get_errors_for_bulk_import_profiles_job")) == 2  # 100 a page


def test_a_key_that_cannot_read_import_jobs_fails_them_with_klaviyos_reason(klaviyo):
    """Reading a job needs the `profiles:read` and `lists:read` scopes (Get Bulk Import Profiles Job)."""
    klaviyo.fake.fail(403, path="/api/profile-bulk-import-jobs/01",
                      message="You do not have permission to perform this action.")
    results = klaviyo.connector().push_batch([profile_item(i, f"p{i}@example.com") for i in range(12)])
    assert all(isinstance(r, Failed) and r.http_status == 403 and "permission to perform" in r.message
               for r in results.values()), results

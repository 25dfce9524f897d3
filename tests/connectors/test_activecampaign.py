"""ActiveCampaign: contact sync by email, custom fields created when missing, stage and trigger tags."""
from __future__ import annotations

import threading
import time

import pytest

from connectors import validate_mapping
from connectors.activecampaign import ABOUT, ActiveCampaignConnector
from connectors.base import Held, RetryAfter, Sent
from connectors.ratelimit import Limiter
from tests.connectors.conftest import consent_item, event_item, profile_item


def connector(world, limiter=None, **mapping) -> ActiveCampaignConnector:
    return ActiveCampaignConnector(world.settings, field_map=validate_mapping(ActiveCampaignConnector, mapping, "test"),
                                   limiter=limiter)


def test_profile_creates_missing_fields_once_and_syncs_values(new_activecampaign):
    activecampaign = new_activecampaign
    c = activecampaign.connector()
    assert isinstance(c.push_batch([profile_item(1, "ada@example.com")])[1], Sent)
    fake = activecampaign.fake
    assert len(fake.operations("create_field")) == 10 and len(fake.operations("create_field_rel")) == 10
    assert fake.operations("create_field")[0].body["field"]["perstag"] == "HUB_STAGE"
    # Each says where it comes from, in the account's field list.
    assert {f["descript"] for f in fake.fields.values()} == {ABOUT}
    assert fake.field_values("ada@example.com")["hub_stage"] == "engaged"
    assert fake.field_values("ada@example.com")["hub_mrr"] == "2500"
    assert fake.contact("ada@example.com")["firstName"] == "Ada"
    assert fake.operations("sync")[0].headers["Api-Token"]
    # A second worker (a new instance) finds the fields instead of creating them again.
    activecampaign.connector().push_batch([profile_item(2, "bob@example.com")])
    assert len(fake.operations("create_field")) == 10


def test_a_field_made_before_a_429_is_linked_later_not_made_again(new_activecampaign):
    activecampaign = new_activecampaign
    fake = activecampaign.fake
    fake.fail(429, retry_after=1, times=1, path="/api/3/fieldRels")
    c = activecampaign.connector()
    first = c.push_batch([profile_item(1, "ada@example.com")])[1]
    assert isinstance(first, RetryAfter)  # ActiveCampaign asked us to wait
    assert isinstance(c.push_batch([profile_item(1, "ada@example.com")])[1], Sent)
    assert len(fake.operations("create_field")) == 10 and len(fake.operations("create_field_rel")) == 11
    assert fake.field_values("ada@example.com")["hub_stage"] == "engaged"


def test_a_push_that_yields_holds_the_first_profile_while_fields_are_set_up_and_loses_none(new_activecampaign):
    activecampaign = new_activecampaign
    # Setting the fields up takes 21 requests, four seconds of ActiveCampaign's 5 a second. A
    # worker's push (a short rate wait) holds the profile when the window is full instead of
    # sleeping through them all; each later push goes on with the fields made so far.
    fake = activecampaign.fake
    c = activecampaign.connector()
    c.use_limiter(Limiter(), rate_wait=0.01)
    pushes = []
    while not pushes or isinstance(pushes[-1], Held) and len(pushes) < 30:
        if pushes:
            time.sleep(pushes[-1].seconds)
        pushes.append(c.push([profile_item(1, "ada@example.com")])[1])
    assert isinstance(pushes[0], Held) and isinstance(pushes[-1], Sent)
    assert len(fake.operations("create_field")) == 10 and len(fake.operations("create_field_rel")) == 10
    assert fake.field_values("ada@example.com")["hub_stage"] == "engaged"


def test_the_stage_tag_follows_the_stage(activecampaign):
    c = activecampaign.connector()
    c.push_batch([profile_item(1, "ada@example.com", stage="new")])
    assert activecampaign.fake.tags_of("ada@example.com") == {"Hub stage: new"}
    c.push_batch([profile_item(1, "ada@example.com", stage="loyal")])
    assert activecampaign.fake.tags_of("ada@example.com") == {"Hub stage: loyal"}
    calls = len(activecampaign.fake.calls)
    c.push_batch([profile_item(1, "ada@example.com", stage="loyal", points=500)])
    assert [x.operation for x in activecampaign.fake.calls[calls:]] == ["sync", "list_contact_tags"]


def test_a_trigger_tags_the_contact_each_time_it_fires(activecampaign):
    c = activecampaign.connector()
    assert isinstance(c.push_batch([event_item(5, "ada@example.com", name="Payment Failed")])[5], Sent)
    c.push_batch([event_item(6, "ada@example.com", name="Payment Failed", key="1:dunning:2")])
    assert activecampaign.fake.added_tags == [("ada@example.com", "Hub: Payment Failed")] * 2
    assert activecampaign.fake.tags_of("ada@example.com") == {"Hub: Payment Failed"}
    assert len(activecampaign.fake.operations("create_tag")) == 1


def test_consent_sets_the_contacts_status_on_the_configured_list(activecampaign):
    fake, c = activecampaign.fake, connector(activecampaign, list_id="1")
    assert isinstance(c.push_batch([consent_item(3, state="subscribed")])[3], Sent)
    assert fake.list_status("ada@example.com", "1") == "subscribed" and fake.mailable("ada@example.com")
    assert isinstance(c.push_batch([consent_item(4, state="unsubscribed")])[4], Sent)
    assert fake.list_status("ada@example.com", "1") == "unsubscribed" and not fake.mailable("ada@example.com")
    assert [call.body["contactList"]["status"] for call in fake.operations("update_list_status")] == [1, 2]


def test_install_names_a_consent_list_activecampaign_does_not_have(activecampaign):
    limiter = Limiter()  # one process: one limiter for both, as the stand-in counts both
    with pytest.raises(RuntimeError, match="list 42 .*No Result found for List with id 42"):
        connector(activecampaign, limiter, list_id="42").install()
    connector(activecampaign, limiter, list_id="1").install()


def test_two_workers_first_pushing_at_once_each_use_the_fields_the_other_made(new_activecampaign):
    """Both list the account's fields before either has made them; ActiveCampaign refuses the
    second maker of each ("The perstag is already in use"), whose profile must still go."""
    fake = new_activecampaign.fake
    fake.slow(0.5, times=2, path="/api/3/fields")  # both listings answered empty, then held together
    push_two_profiles_at_once(new_activecampaign)
    assert any(call.status == 422 for call in fake.operations("create_field"))  # the race happened
    assert len(fake.fields) == 10
    assert {fake.field_values(f"p{n}@example.com")["hub_stage"] for n in range(2)} == {"engaged"}


def test_two_workers_tagging_a_new_stage_at_once_share_one_tag(activecampaign):
    fake = activecampaign.fake
    # Both searches answered without the tag, each held past the other's arrival (the shared
    # limit may hold the second a second behind the first).
    fake.slow(1.5, times=2, path="/api/3/tags")
    push_two_profiles_at_once(activecampaign)
    assert any(call.status == 422 for call in fake.operations("create_tag"))  # the race happened
    assert [t["tag"] for t in fake.tags.values()] == ["Hub stage: engaged"]
    assert {frozenset(fake.tags_of(f"p{n}@example.com")) for n in range(2)} == {frozenset({"Hub stage: engaged"})}


def push_two_profiles_at_once(world) -> None:
    """Two workers each push their own person's profile at the same time, under the account's
    one limit of 5 requests a second as workers share it; both are sent."""
    workers, limiter = [world.connector() for _ in range(2)], Limiter()
    results: dict[str, object] = {}

    def push(c, email: str, item_id: int) -> None:
        c.use_limiter(limiter, rate_wait=30)
        results[email] = c.push_batch([profile_item(item_id, email)])[item_id]

    threads = [threading.Thread(target=push, args=(c, f"p{n}@example.com", n + 1)) for n, c in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(isinstance(r, Sent) for r in results.values()) and len(results) == 2, results

"""Card Expiring 30 days before the end of the card's expiry month."""
import copy
import json
from datetime import date

import pytest

from hub.sync.rules import card_expiry
from tests.hub.sync.rules.conftest import at, day, sub, subscriber, tweak
from tests.samples import load_sample, stripe_event, stripe_resource
from webhooks.stripe import webhook as stripe_hook


def holder(**cards):
    live = sub(update_payment_url="https://billing.example/portal")
    return subscriber(cards=cards, subscriptions=(live,))


def card(month, year, **kw):
    return {"brand": "visa", "last4": "4242", "exp_month": month, "exp_year": year,
            "updated_at": "2026-01-01T00:00:00+00:00", **kw}


@pytest.mark.parametrize("month, year, due", [
    (11, 2026, "2026-11-01"),   # expires Dec 1: 30 days back is Nov 1
    (12, 2026, "2026-12-02"),   # expires Jan 1 (year end)
    (2, 2028, "2028-01-31"),    # leap year: expires Mar 1 2028
    (2, 2027, "2027-01-30"),
    (1, 27, "2027-01-02"),      # two-digit year
])
def test_warning_day(p, month, year, due):
    s = holder(**{"stripe:pm_1": card(month, year)})
    d = date.fromisoformat(due)
    before, of = day(str(date.fromordinal(d.toordinal() - 1))), day(due)
    assert card_expiry.expiring(s, before, at(due), p) == []
    (warning,) = card_expiry.expiring(s, of, at(due + "T06:00"), p)
    assert warning.name == "Card Expiring"
    assert warning.properties["update_payment_url"] == "https://billing.example/portal"
    assert warning.properties["last4"] == "4242"
    full_year = year + 2000 if year < 100 else year
    assert (warning.properties["exp_year"], warning.properties["exp_month"]) == (full_year, month)
    assert card_expiry.due_months(of, p) == [(full_year, month)]   # the sweep looks for these cards


def test_due_months_are_rare(p):
    assert card_expiry.due_months(day("2026-11-01"), p) == [(2026, 11)]
    assert card_expiry.due_months(day("2026-11-02"), p) == []


def test_an_auto_updated_card_is_warned_about_for_the_expiry_it_has_now(p):
    auto = holder(**{"stripe:pm_1": card(11, 2029, auto_updated=True)})
    assert card_expiry.expiring(auto, day("2026-11-01"), at("2026-11-01T06:00"), p) == []
    (warning,) = card_expiry.expiring(auto, day("2029-11-01"), at("2029-11-01T06:00"), p)
    assert warning.properties["valid_until"] == "2029-11-30"


def test_only_the_default_card_is_warned_about_where_the_platform_names_it(p):
    # A card added later that lasts longer does not silence the card Stripe still charges.
    s = holder(**{"stripe:pm_1": card(11, 2026, default=True),
                  "stripe:pm_2": card(5, 2030, default=False, updated_at="2026-06-01T00:00:00+00:00")})
    (warning,) = card_expiry.expiring(s, day("2026-11-01"), at("2026-11-01T06:00"), p)
    assert warning.occasion.endswith("stripe:pm_1")
    other = holder(**{"stripe:pm_1": card(11, 2026, default=False), "stripe:pm_2": {"default": True}})
    assert card_expiry.expiring(other, day("2026-11-01"), at("2026-11-01T06:00"), p) == []


def test_suppressed_when_replaced(p):
    replaced = holder(**{"stripe:pm_1": card(11, 2026),
                         "stripe:pm_2": card(5, 2030, updated_at="2026-06-01T00:00:00+00:00")})
    assert card_expiry.expiring(replaced, day("2026-11-01"), at("2026-11-01T06:00"), p) == []


def test_switched_off():
    p = tweak(**{"card_expiry.enabled": False})
    s = holder(**{"stripe:pm_1": card(11, 2026)})
    assert card_expiry.expiring(s, day("2026-11-01"), at("2026-11-01T06:00"), p) == []


def test_notice_takes_later_days_until_the_card_stops_working(p):
    s = holder(**{"stripe:pm_1": card(11, 2026)})
    assert card_expiry.expiring(s, day("2026-11-15"), at("2026-11-15T06:00"), p) == []
    assert len(card_expiry.expiring(s, day("2026-11-15"), at("2026-11-15T06:00"), p, notice=True)) == 1
    assert card_expiry.expiring(s, day("2026-12-01"), at("2026-12-01T06:00"), p, notice=True) == []


def test_cards_without_expiry_are_ignored(p):
    s = holder(**{"shopify:1": {"brand": None, "exp_month": None, "exp_year": None}})
    assert card_expiry.expiring(s, day("2026-11-01"), at("2026-11-01T06:00"), p, notice=True) == []


# --- from Stripe's webhooks to the warning: the card on file is the customer's default --------

DAY = 86400
OCT_1 = 1790812800  # 2026-10-01T00:00:00Z
DUE = "2026-12-02T06:00"  # 30 days before a card valid until December 2026 stops working


def stripe_card(event_type, created, exp=(12, 2026), pm="card_1JN6Z1KXBGcbgpbZ2AZJOYEZ"):
    """The pay gem's payment_method.attached payload as `event_type`, for card `pm` expiring `exp`."""
    obj = copy.deepcopy(load_sample("shared:stripe/pay/payment_method.attached.json")["object"])
    obj["id"], (obj["card"]["exp_month"], obj["card"]["exp_year"]) = pm, exp
    previous = None
    if event_type == "payment_method.detached":  # Stripe's detach: the customer moves to the previous values
        obj["customer"], previous = None, {"customer": "cus_1234"}
    return stripe_event(event_type, obj, event_id=f"evt_{event_type}_{pm}_{created}", created=created,
                        previous_attributes=previous)


def default_card_is(pm, created, source=None):
    """customer.updated for cus_1234 whose default payment method is now `pm`."""
    customer = {**stripe_resource("customer"), "id": "cus_1234", "default_source": source,
                "invoice_settings": {**stripe_resource("customer")["invoice_settings"],
                                     "default_payment_method": pm}}
    return stripe_event("customer.updated", customer, event_id=f"evt_default_{created}", created=created,
                        previous_attributes={"invoice_settings": {"default_payment_method": None}})


def deliver(world, *events):
    fired = []
    for event in events:
        body = json.loads(json.dumps(event))
        envelope = stripe_hook.describe({}, json.dumps(event).encode())
        normalize = stripe_hook.TOPICS.get(body["type"])  # an unknown type is stored and ignored
        for canonical in normalize(body, envelope) if normalize else []:
            fired += world.receive(canonical)
    return fired


def test_an_attached_card_expiring_soon_is_warned_about_30_days_before(world):
    deliver(world, stripe_card("payment_method.attached", OCT_1))
    assert world.sweep("2026-12-01T06:00") == {}
    assert world.sweep(DUE).get("card_expiry") == 1
    [(name, _, occasion, _)] = world.triggers(name="Card Expiring")
    assert occasion.startswith("2026-12/")


def test_a_card_replaced_by_a_new_default_is_not_warned_about(world):
    deliver(world, stripe_card("payment_method.updated", OCT_1),
            stripe_card("payment_method.attached", OCT_1 + 30 * DAY, exp=(3, 2031), pm="pm_1000"),
            default_card_is("pm_1000", OCT_1 + 30 * DAY + 5))
    assert "card_expiry" not in world.sweep(DUE)
    assert world.triggers(name="Card Expiring") == []


def test_a_card_the_network_updated_is_warned_about_for_its_new_expiry_only(world):
    deliver(world, stripe_card("payment_method.updated", OCT_1),
            stripe_card("payment_method.automatically_updated", OCT_1 + 20 * DAY, exp=(12, 2029)))
    assert "card_expiry" not in world.sweep(DUE)
    assert world.sweep("2029-12-02T06:00").get("card_expiry") == 1
    [(_, _, occasion, _)] = world.triggers(name="Card Expiring")
    assert occasion.startswith("2029-12/")


def test_a_detached_card_is_not_warned_about(world):
    deliver(world, stripe_card("payment_method.updated", OCT_1),
            stripe_card("payment_method.detached", OCT_1 + 20 * DAY))
    assert "card_expiry" not in world.sweep(DUE)
    assert world.triggers(name="Card Expiring") == []


def test_a_legacy_default_card_expiring_still_warns_on_stripes_notice(world):
    legacy = {**stripe_resource("card"), "id": "card_legacy", "customer": "cus_1234",
              "exp_month": 12, "exp_year": 2026}
    fired = deliver(world, default_card_is(None, OCT_1, source="card_legacy"),
                    stripe_card("payment_method.attached", OCT_1 + DAY, exp=(3, 2031), pm="pm_spare"),
                    stripe_event("customer.source.expiring", legacy, event_id="evt_expiring",
                                 created=OCT_1 + 65 * DAY))  # Dec 5
    assert fired == ["Card Expiring"]


def test_a_spare_card_is_no_payment_method_update_until_it_becomes_the_default(world):
    fired = deliver(world, stripe_card("payment_method.attached", OCT_1, exp=(3, 2030), pm="pm_main"),
                    default_card_is("pm_main", OCT_1 + 10),
                    stripe_card("payment_method.attached", OCT_1 + DAY, exp=(3, 2031), pm="pm_spare"))
    # pm_main attached (no default named yet), then made the default: one update.
    assert [name for name in fired if name == "Payment Method Updated"] == ["Payment Method Updated"]
    assert deliver(world, default_card_is("pm_spare", OCT_1 + 2 * DAY)) == ["Payment Method Updated"]

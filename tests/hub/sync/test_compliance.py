"""Shopify's compliance webhooks: customers/redact, customers/data_request,
shop/redact and app/uninstalled, from a signed webhook through the worker to the tools."""
from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

import connectors
from hub.models import Base, Checkpoint, Delivery, InboxEvent, Subscriber, Subscription, Trigger
from hub.ops.support import replay_event
from hub.sync import compliance, outbox
from hub.sync.inbox import drain_inbox
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from standins.shopify import FakeShopifyAdmin
from tests.samples import API_HEADERS, load_sample, post

SHOP = "example.myshopify.com"
EMAIL = "adelaide.quimby@example.com"
PHONE = "+16135550199"
FIRST, LAST = "Adelaide", "Quimby"
CUSTOMER_ID = 770011223344
# Every spelling of the person that must be gone.
NEEDLES = (EMAIL, "Adelaide.Quimby@Example.com", PHONE, "6135550199", FIRST, LAST)
TOOLS = ("klaviyo", "hubspot", "activecampaign")


def _customer(**extra) -> dict:
    customer = load_sample("shopify/customers_create.json")
    customer.update({"id": CUSTOMER_ID, "email": "Adelaide.Quimby@Example.com", "phone": PHONE,
                     "first_name": FIRST, "last_name": LAST, "note": f"{FIRST} likes tea",
                     "updated_at": "2026-10-01T10:00:00-04:00", "created_at": "2026-10-01T10:00:00-04:00",
                     "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in",
                                                 "consent_updated_at": "2026-10-01T10:00:00-04:00"},
                     **extra})
    customer["default_address"] = {**customer["default_address"], "first_name": FIRST,
                                   "last_name": LAST, "phone": PHONE, "name": f"{FIRST} {LAST}"}
    return customer


def _order(order_id: int, n: int) -> dict:
    order = load_sample("shopify/orders_create.json")
    order.update(id=order_id, name=f"#90{n}", email=EMAIL, contact_email=EMAIL, phone=PHONE,
                 financial_status="paid", processed_at=f"2026-10-0{n}T12:00:00-04:00",
                 updated_at=f"2026-10-0{n}T12:00:00-04:00", created_at=f"2026-10-0{n}T12:00:00-04:00")
    order["customer"] = {**(order.get("customer") or {}), "id": CUSTOMER_ID, "email": EMAIL,
                         "phone": PHONE, "first_name": FIRST, "last_name": LAST}
    for key in ("billing_address", "shipping_address"):
        if order.get(key):
            order[key] = {**order[key], "first_name": FIRST, "last_name": LAST, "name": f"{FIRST} {LAST}",
                          "phone": PHONE}
    return order


@pytest.fixture
def tools(hub):
    """The three tools' stand-ins, with the hub's settings pointing at them (ActiveCampaign's
    account set up as `hub install` leaves it)."""
    with FakeKlaviyo(api_key="pk_c") as klaviyo, FakeHubSpot(token="pat-c") as hubspot, \
            FakeActiveCampaign(api_key="ac-c") as ac:
        s = hub.settings
        s.KLAVIYO_API_KEY, s.KLAVIYO_BASE_URL = "pk_c", klaviyo.url
        s.HUBSPOT_ACCESS_TOKEN, s.HUBSPOT_BASE_URL = "pat-c", hubspot.url
        s.ACTIVECAMPAIGN_API_KEY, s.ACTIVECAMPAIGN_URL = "ac-c", ac.url
        ac.set_up(connectors.load_mapping(s, "activecampaign")["fields"].values())
        yield {"klaviyo": klaviyo, "hubspot": hubspot, "activecampaign": ac}
        for fake in (klaviyo, hubspot, ac):
            assert fake.crashes == []
        assert klaviyo.invalid == []


def _push_all(hub, rounds: int = 3) -> None:
    start = datetime.now(timezone.utc)
    for n in range(rounds):
        for name in TOOLS:
            outbox.push_batch(hub.storage, hub.settings, name, now=start + timedelta(minutes=n))


def _history(client, hub) -> None:
    """A customer with consent, two paid orders, triggers and deliveries, pushed to the tools."""
    assert post(client, "shopify", _customer(), topic="customers/create", webhook_id="c-1").status_code == 200
    for n, order_id in enumerate((5550001, 5550002), start=1):
        assert post(client, "shopify", _order(order_id, n), topic="orders/paid",
                    webhook_id=f"o-{n}").status_code == 200
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)


def _redact() -> dict:
    payload = load_sample("shopify/customers_redact.json")
    payload.update(shop_domain=SHOP, customer={"id": CUSTOMER_ID, "email": EMAIL, "phone": PHONE},
                   orders_to_redact=[5550001, 5550002])
    return payload


def _database_text(hub) -> str:
    """Every row of every table as text (bytes decoded, JSON dumped)."""
    parts = []
    with hub.storage.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        value = bytes(value).decode("utf-8", "replace")
                    elif isinstance(value, (dict, list)):
                        value = json.dumps(value)
                    parts.append(f"{table.name}: {value}")
    return "\n".join(parts)


def _found(text: str) -> list[str]:
    lowered = text.lower()
    return [n for n in NEEDLES if n.lower() in lowered]


def test_customers_redact_erases_the_person_everywhere_and_asks_each_tool_once(client, hub, tools, caplog):
    caplog.set_level(logging.DEBUG)
    _history(client, hub)
    with hub.storage.session() as s:
        subscriber = s.scalar(select(Subscriber))
        sid, orders, spend, stage = (subscriber.id, subscriber.orders_count, subscriber.lifetime_spend,
                                     subscriber.stage)
        assert subscriber.email == EMAIL and orders == 2 and spend > 0
        assert s.scalar(select(Trigger.id).where(Trigger.subscriber_id == sid)) is not None
        assert s.scalar(select(Delivery.id).where(Delivery.status == "sent")) is not None
    assert tools["klaviyo"].profile(EMAIL) is not None
    assert EMAIL in tools["hubspot"].contacts
    assert tools["activecampaign"].contact(EMAIL) is not None
    assert _found(_database_text(hub)), "the history should hold the person before the redact"

    response = post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-1")
    assert response.status_code == 200
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)
    # Shopify resends; a replayed or repeated redact asks nothing twice.
    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-2")
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)

    # The tools: one deletion request each, and the person is gone there.
    assert tools["klaviyo"].deletions == [{"email": EMAIL}, {"phone_number": PHONE}]
    assert tools["klaviyo"].profile(EMAIL) is None
    assert tools["hubspot"].gdpr_deleted == [EMAIL] and EMAIL not in tools["hubspot"].contacts
    assert tools["activecampaign"].deleted == [EMAIL]
    assert tools["activecampaign"].contact(EMAIL) is None

    # The database: no email, name or phone in any column of any table; counts kept.
    leftovers = _found(_database_text(hub))
    assert leftovers == [], [line for line in _database_text(hub).splitlines() if _found(line)][:10]
    with hub.storage.session() as s:
        subscriber = s.get(Subscriber, sid)
        assert subscriber.erased_at is not None and subscriber.email is None
        assert (subscriber.orders_count, subscriber.lifetime_spend, subscriber.stage) == (orders, spend, stage)
        erasures = s.scalars(select(Delivery).where(Delivery.kind == "erase")).all()
        assert sorted(d.connector for d in erasures) == sorted(TOOLS)
        assert all(d.status == "sent" and d.payload["email"] is None for d in erasures)
        assert all(d.payload["subject"] == compliance.person_hash(EMAIL) for d in erasures)
        assert s.scalar(select(InboxEvent).where(InboxEvent.topic == "orders/paid")).body == b'{"erased": true}'

    # The JSON API.
    body = client.get(f"/api/subscribers/{sid}", headers=API_HEADERS)
    assert body.status_code == 200
    assert _found(body.get_data(as_text=True)) == []
    assert body.get_json()["subscriber"]["orders_count"] == orders
    assert client.get(f"/api/subscribers/{EMAIL}", headers=API_HEADERS).status_code == 404

    # The logs.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert _found(logged) == []


def test_redact_of_an_unknown_customer_scrubs_its_own_webhook(client, hub):
    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-unknown")
    drain_inbox(hub.storage, hub.settings)
    assert _found(_database_text(hub)) == []
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent))
        assert row.status == "processed" and row.body == b'{"erased": true}'


def test_a_failed_erase_keeps_what_a_retry_needs_and_a_later_success_forgets_it(client, hub, tools):
    _history(client, hub)
    tools["hubspot"].fail(503, times=1, path="gdpr-delete")
    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-1")
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub, rounds=1)
    with hub.storage.session() as s:
        held = s.scalar(select(Delivery).where(Delivery.kind == "erase", Delivery.connector == "hubspot"))
        assert held.status == "retrying" and held.payload["email"] == EMAIL
    outbox.push_batch(hub.storage, hub.settings, "hubspot", now=datetime.now(timezone.utc) + timedelta(hours=1))
    with hub.storage.session() as s:
        held = s.scalar(select(Delivery).where(Delivery.kind == "erase", Delivery.connector == "hubspot"))
        assert held.status == "sent" and held.payload["email"] is None
    assert tools["hubspot"].gdpr_deleted == [EMAIL]  # the 503 came before the stand-in acted
    assert _found(_database_text(hub)) == []


def test_data_request_stores_an_export_staff_can_retrieve(client, hub, tools):
    _history(client, hub)
    payload = load_sample("shopify/customers_data_request.json")
    payload.update(shop_domain=SHOP, customer={"id": CUSTOMER_ID, "email": EMAIL, "phone": PHONE},
                   data_request={"id": 4242})
    post(client, "shopify", payload, topic="customers/data_request", webhook_id="d-1")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        stored = compliance.data_request(s, "4242")
        assert [r["request_id"] for r in compliance.data_requests(s)] == ["4242"]
        subscriber = s.scalar(select(Subscriber))
        assert subscriber.email == EMAIL  # a data request changes nothing
    assert stored["found"] is True
    export = stored["export"]
    assert export["state"]["email"] == EMAIL and export["state"]["first_name"] == FIRST
    assert export["state"]["phone"] == PHONE
    assert len(export["state"]["orders"]) == 2
    assert export["triggers"] and export["deliveries"] and export["timeline"]
    assert any(i["topic"] == "customers/create" and FIRST in i["body"] for i in export["inbound"])
    assert "X-Shopify-Hmac-Sha256" not in json.dumps(export)
    # Nothing was sent to the tools because of it.
    with hub.storage.session() as s:
        assert s.scalar(select(Delivery).where(Delivery.kind == "erase")) is None

    # A later redact deletes the stored export too.
    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-1")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        assert compliance.data_request(s, "4242") is None
    _push_all(hub)  # the erase deliveries hold the email until the tools accepted them
    assert _found(_database_text(hub)) == []


def test_data_request_for_an_unknown_customer_is_stored_as_nothing_held(client, hub):
    payload = load_sample("shopify/customers_data_request.json")
    payload.update(shop_domain=SHOP)
    post(client, "shopify", payload, topic="customers/data_request", webhook_id="d-2")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        stored = compliance.data_request(s, "9999")
    assert stored["found"] is False and stored["export"] is None


def test_app_uninstalled_is_recorded_and_keeps_the_data(client, hub):
    post(client, "shopify", _customer(), topic="customers/create", webhook_id="c-1")
    post(client, "shopify", load_sample("shopify/app_uninstalled.json"), topic="app/uninstalled",
         webhook_id="u-1")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        assert compliance.shopify_uninstalled(s) is True
        assert s.get(Checkpoint, "shopify:uninstalled").value["shop"] == SHOP
        assert s.scalar(select(Subscriber.email)) == EMAIL
        assert s.scalar(select(InboxEvent.status).where(InboxEvent.topic == "app/uninstalled")) == "processed"
        compliance.clear_uninstalled(s)
        assert compliance.shopify_uninstalled(s) is False


def test_shop_redact_erases_the_shops_subscribers_and_asks_no_tool(client, hub, tools):
    _history(client, hub)
    other = _customer()
    other.update(id=880011, email="zebedee.other@example.com", phone="+16135550777",
                 first_name="Zebedee", last_name="Other")
    post(client, "shopify", other, topic="customers/create", webhook_id="c-2")
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)
    payload = copy.deepcopy(load_sample("shopify/shop_redact.json"))
    payload["shop_domain"] = SHOP
    post(client, "shopify", payload, topic="shop/redact", webhook_id="s-1")
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)
    text = _database_text(hub)
    assert _found(text) == []
    assert "zebedee" not in text.lower() and "6135550777" not in text
    with hub.storage.session() as s:
        people = s.scalars(select(Subscriber)).all()
        assert len(people) == 2 and all(p.erased_at is not None for p in people)
        assert sum(p.orders_count for p in people) == 2
        assert s.scalar(select(Delivery).where(Delivery.kind == "erase")) is None
    assert tools["klaviyo"].deletions == [] and tools["hubspot"].gdpr_deleted == []


def test_an_email_the_person_used_before_is_erased_too(client, hub):
    old = _customer()
    old.update(email="quimby.old@example.org")
    post(client, "shopify", old, topic="customers/create", webhook_id="c-old")
    post(client, "shopify", _customer(updated_at="2026-10-05T10:00:00-04:00"), topic="customers/update",
         webhook_id="c-new")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber.email)) == EMAIL
    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-1")
    drain_inbox(hub.storage, hub.settings)
    text = _database_text(hub)
    assert "quimby.old" not in text and _found(text) == []


def test_a_redact_drained_while_webhooks_arrive_still_erases_and_the_webhooks_wait(client, hub, monkeypatch):
    """Erasing rewrites stored webhooks: on SQLite the batch holds the inbox file from its
    start, so one arriving meanwhile waits for the commit instead of failing the erasure."""
    import threading

    from tests.hub.sync.test_inbox import customer_event

    post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-busy")
    arriving = {}
    stub = compliance._stub_inbox_rows

    def stub_while_a_webhook_arrives(session, rows, needles):
        def arrive():
            arriving["status"] = post(client, "stripe", customer_event(event_id="evt_during")).status_code

        thread = arriving["thread"] = threading.Thread(target=arrive)
        thread.start()
        thread.join(timeout=0.5)
        return stub(session, rows, needles)

    monkeypatch.setattr(compliance, "_stub_inbox_rows", stub_while_a_webhook_arrives)
    drain_inbox(hub.storage, hub.settings, batch_size=10)
    arriving["thread"].join(timeout=30)
    assert arriving["status"] == 200
    with hub.storage.session() as s:
        rows = {r.event_id: r for r in s.scalars(select(InboxEvent))}
    redact = next(r for r in rows.values() if r.topic == "customers/redact")
    assert redact.status == "processed" and redact.body == b'{"erased": true}'
    assert rows["evt_during"].status in ("pending", "processed")


def _contract_after_uninstall(client, hub, admin) -> str:
    """app/uninstalled, then a contract webhook already on its way, each drained; the contract's id."""
    gid = "gid://shopify/SubscriptionContract/7879037765"  # the update sample's contract
    admin.hold(gid)
    hub.settings.SHOPIFY_SHOP, hub.settings.SHOPIFY_ACCESS_TOKEN = SHOP, "shpat_test"
    hub.settings.SHOPIFY_ADMIN_URL, hub.settings.SHOPIFY_OWNS_CONTRACTS = admin.url, True
    post(client, "shopify", load_sample("shopify/app_uninstalled.json"), topic="app/uninstalled",
         webhook_id="u-1")
    drain_inbox(hub.storage, hub.settings)
    post(client, "shopify", load_sample("shopify/subscription_contracts_update.json"),
         topic="subscription_contracts/update", webhook_id="sc-1")
    drain_inbox(hub.storage, hub.settings)
    return gid


def test_a_contract_webhook_after_app_uninstalled_asks_shopify_nothing_until_the_app_is_back(client, hub):
    """A webhook already on its way when the app is uninstalled: the worker asks the Admin API
    nothing (its token is revoked) and applies what the webhook itself says; a replay after
    the reinstall reads the contract and fills in the rest."""
    with FakeShopifyAdmin(token="shpat_test", owns_contracts=True) as admin:
        gid = _contract_after_uninstall(client, hub, admin)
        assert admin.requests == []
        with hub.storage.session() as s:
            row = s.scalar(select(InboxEvent).where(InboxEvent.topic == "subscription_contracts/update"))
            assert row.status == "processed"
            assert s.scalar(select(Subscription.status).where(Subscription.source_id == "7879037765")) == "active"
            assert s.scalar(select(Subscriber.email)) is None  # the contract, which names the person, unread

        with hub.storage.session() as s:  # `hub install --reinstalled`, then staff replay the row
            compliance.clear_uninstalled(s)
            s.commit()
        with hub.storage.session() as s:
            row = s.scalar(select(InboxEvent).where(InboxEvent.topic == "subscription_contracts/update"))
            latest = replay_event(s, row, hub.settings)
            s.commit()
        assert [r["variables"]["id"] for r in admin.requests][:1] == [gid]
        # The plan was unknown, not changed: no Plan Changed email; the person's email is learned.
        assert [entry["triggers"] for entry in latest if "triggers" in entry] == [[]]
        with hub.storage.session() as s:
            assert s.scalar(select(Subscriber.email)) == admin.contracts[gid]["customer"]["email"].lower()


@pytest.mark.parametrize("welcome_days_ago, late", [(0, ["Subscription Started", "Welcome Step"]),
                                                  (8, ["Subscription Started"])])
def test_a_person_first_known_by_ids_alone_is_welcomed_once_their_email_is_learned(
        client, hub, tools, welcome_days_ago, late):
    """A contract applied by its ids alone fires Subscription Started and the first Welcome Step
    for a person no tool can identify yet. Once a later read names their email, the tools get
    those events, once each; one fired more than a week before is not sent that late."""
    klaviyo = tools["klaviyo"]
    with FakeShopifyAdmin(token="shpat_test", owns_contracts=True) as admin:
        gid = _contract_after_uninstall(client, hub, admin)
        _push_all(hub)
        with hub.storage.session() as s:
            assert sorted(s.scalars(select(Trigger.name))) == ["Subscription Started", "Welcome Step"]
        assert klaviyo.events == []  # nobody to send them to
        with hub.storage.session() as s:
            s.execute(update(Trigger).where(Trigger.name == "Welcome Step").values(
                created_at=datetime.now(timezone.utc) - timedelta(days=welcome_days_ago, minutes=1)))
            compliance.clear_uninstalled(s)
            s.commit()
        notes = []
        for _ in range(2):  # staff replay the row; the second replay sends nothing again
            with hub.storage.session() as s:
                notes.append([note for entry in replay_event(s, s.scalar(select(InboxEvent).where(
                    InboxEvent.topic == "subscription_contracts/update")), hub.settings)
                    for note in entry.get("notes", []) if note.startswith("reachable now")])
                s.commit()
            _push_all(hub)
        email = admin.contracts[gid]["customer"]["email"].lower()
    assert sorted(e["metric"] for e in klaviyo.events) == late and klaviyo.duplicate_events == 0
    assert {e["profile_id"] for e in klaviyo.events} == {klaviyo.profile_id(email)}
    with hub.storage.session() as s:  # and each other tool that takes events, once each
        sent = s.execute(select(Delivery.connector, Delivery.trigger_id, Delivery.status)
                         .where(Delivery.kind == "event")).all()
    assert {status for *_, status in sent} == {"sent"}
    assert set(Counter((connector, trigger) for connector, trigger, _ in sent).values()) == {1}
    assert len({connector for connector, *_ in sent}) > 1
    # The first replay's timeline says why events fired earlier went out with it; the second's, nothing.
    assert notes == [[f"reachable now: {len(sent)} deliveries of triggers fired while no tool could identify them"],
                     []]

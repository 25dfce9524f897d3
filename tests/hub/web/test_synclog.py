"""The sync log pages through the Flask test client: search, the subscriber's story, lists
with keyset pagination, masking, retry / replay / resend, and the dashboard."""
from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from hub.models import Delivery, DeliveryAttempt, InboxEvent, ProfileDue, Subscriber, Subscription
from hub.ops import synclog
from hub.sync.inbox import drain_inbox
from standins.shopify import INTERNAL_ERROR, FakeShopifyAdmin
from tests.hub.web.conftest import token
from tests.hub.web.shop import Shop, days_ago
from tests.samples import SAMPLE_CONTRACT, load_sample, post, sign_recharge, stripe_event


def text_of(response) -> str:
    """The page's visible text, whitespace collapsed (what a reader sees)."""
    return visible_text(response.get_data(as_text=True))


def visible_text(html: str) -> str:
    html = re.sub(r"(?s)<script.*?</script>|<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", html.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
                  .replace("&lt;", "<").replace("&gt;", ">").replace("&#8203;", ""))


@pytest.fixture
def jenny(client, hub):
    """One Stripe customer with a subscription and a failed payment; returns her subscriber id."""
    shop = Shop(client)
    shop.customer("cus_jenny", "jenny.rosen@example.com", "Jenny Rosen", at=days_ago(40), phone="+15551234567")
    shop.subscribe("cus_jenny", "sub_jenny", at=days_ago(40), amount=2900, plan="Basic")
    shop.invoice("cus_jenny", "sub_jenny", "in_jenny", at=days_ago(3), paid=False)
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        return s.scalar(select(Subscriber.id).where(Subscriber.email == "jenny.rosen@example.com"))


def add_delivery(hub, subscriber_id, connector="klaviyo", status="dead", attempts=(), kind="profile",
                 payload=None) -> int:
    """A delivery and its attempts, written directly: [(at, outcome, http_status, retry_after, message)]."""
    with hub.storage.session() as s:
        d = Delivery(connector=connector, kind=kind, subscriber_id=subscriber_id,
                     idempotency_key=f"test:{connector}:{status}:{len(attempts)}:{datetime.now().timestamp()}",
                     payload=payload or {"subscriber_id": subscriber_id, "email": "jenny.rosen@example.com",
                                         "fields": {}}, status=status, attempts=len(attempts),
                     next_attempt_at=datetime.now(timezone.utc) + timedelta(minutes=5),
                     last_error=attempts[-1][4] if attempts else None)
        s.add(d)
        s.flush()
        for at, outcome, code, wait, message in attempts:
            s.add(DeliveryAttempt(delivery_id=d.id, at=at, outcome=outcome, http_status=code, latency_ms=120,
                                  request_id="req-1", retry_after=wait, message=message))
        return d.id


# Search -------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["jenny.rosen@example.com", "  JENNY.ROSEN@example.com ", "Jenny Rosen", "rosen",
                                   "cus_jenny", "sub_jenny", "in_jenny"])
def test_search_opens_the_one_customer_it_finds(operator, jenny, query):
    response = operator.get("/sync-log/search", query_string={"q": query})
    assert response.status_code == 302, query
    assert response.location == f"/sync-log/subscribers/{jenny}"


def test_search_by_event_id_opens_the_event_in_its_customers_story(operator, jenny, hub):
    with hub.storage.session() as s:
        row_id = s.scalar(select(InboxEvent.id).where(InboxEvent.event_id == "evt_shop_1"))
    add_inbox_rows(hub, 60, datetime.now(timezone.utc), subscriber_id=jenny)  # newer than hers: pages above it
    response = operator.get("/sync-log/search?q=evt_shop_1")
    assert re.fullmatch(rf"/sync-log/subscribers/{jenny}\?before=[\d.]+#event-{row_id}", response.location)
    html = operator.get(response.location).get_data(as_text=True)
    assert re.findall(r'<li class="item event" id="event-(\d+)"', html)[0] == str(row_id)  # the page begins with it
    assert "« Newest" in html


def test_search_by_shopify_order_number_and_customer_id(operator, client, hub):
    post(client, "shopify", load_sample("shopify/orders_create.json"), topic="orders/create", webhook_id="wh-o1")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        owner = s.scalar(select(Subscriber.id).where(Subscriber.shopify_customer_id == "115310627314723954"))
    for query in ("#9999", "9999", "115310627314723954"):
        assert operator.get("/sync-log/search", query_string={"q": query}).location == f"/sync-log/subscribers/{owner}"


def test_search_lists_several_matches_with_masked_emails(operator, client, hub):
    shop = Shop(client)
    for n in range(3):
        shop.customer(f"cus_p{n}", f"pat.{n}@example.com", f"Pat Smith{n}", at=days_ago(5))
    drain_inbox(hub.storage, hub.settings)
    response = operator.get("/sync-log/search?q=pat")
    page = text_of(response)
    assert response.status_code == 200
    assert page.count("p***@example.com") == 3 and "pat.0@example.com" not in page


def test_search_says_plainly_when_nothing_matches(operator, jenny):
    page = text_of(operator.get("/sync-log/search?q=nobody-at-all"))
    assert "Nothing matches “nobody-at-all”" in page


def test_the_search_box_is_on_every_page(operator, jenny):
    for path in ("/sync-log/", "/sync-log/events", "/sync-log/deliveries", "/sync-log/failed-events",
                 "/sync-log/dashboard", f"/sync-log/subscribers/{jenny}"):
        assert 'role="search"' in operator.get(path).get_data(as_text=True), path


# The subscriber page ----------------------------------------------------------------------------

def test_subscriber_page_shows_state_money_and_the_timeline_newest_first(operator, jenny, hub):
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "jenny.rosen@example.com" in page and "+15551234567" in page  # whole on their own page
    assert "At risk" in page and "payment failed" in page  # stage with its reason
    assert "Health score" in page and "of 100" in page
    assert "Bronze" in page and "points" in page
    assert "29.00 USD per month" in page and "active" in page
    assert "in_jenny" in page and "failed" in page and "first failed" in page
    assert "Marketing consent" in page
    received = [m.start() for m in re.finditer(r"Received from Stripe", page)]
    assert len(received) == 3
    topics = re.findall(r"Received from Stripe: (\S+)", page)
    assert topics == ["invoice.payment_failed", "customer.subscription.created", "customer.created"]
    assert "What changed" in page
    assert "Subscription Basic: created (active), plan Basic, interval month, amount 29.00 USD" in page
    assert re.search(r"The hub.s assessment: stage New → At risk, health score \d+ → \d+", page)
    assert "Triggers fired" in page and "Payment Failed" in page


def test_a_renewal_that_will_charge_other_than_the_price_says_what_beside_its_date(operator, client, jenny, hub):
    """Stripe's preview of the renewal (a schedule's next phase, a discount ending) is what the
    reminders name: the page says it beside the renewal, so the price shown does not contradict
    the email."""
    with hub.storage.session() as s:
        renews = s.scalar(select(Subscription.next_renewal_at).where(Subscription.source_id == "sub_jenny"))
    preview = {"object": "invoice", "id": None, "customer": "cus_jenny", "currency": "usd", "amount_due": 3500,
               "period_end": int(renews.timestamp()), "parent": {"subscription_details": {"subscription": "sub_jenny"}}}
    post(client, "stripe", stripe_event("invoice.upcoming", preview, event_id="evt_preview",
                                        created=int(renews.timestamp()) - 3 * 86400))
    drain_inbox(hub.storage, hub.settings)
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "29.00 USD per month" in page and "charges 35.00 USD, as Stripe told of this renewal" in page


def test_consent_per_channel_with_its_source_and_time(operator, client, hub):
    post(client, "shopify", load_sample("shopify/customers_create.json"), topic="customers/create", webhook_id="wh-c1")
    post(client, "shopify", {"customer_id": 706405506930370084, "email_address": "bob@biller.com",
                             "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in",
                                                         "consent_updated_at": "2026-10-01T10:00:00Z"}},
         topic="customers_email_marketing_consent/update", webhook_id="wh-c2")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        bob = s.scalar(select(Subscriber.id).where(Subscriber.email == "bob@biller.com"))
    page = text_of(operator.get(f"/sync-log/subscribers/{bob}"))
    assert re.search(r"Email subscribed \(single opt in\) Shopify 1 Oct 2026, 10:00 UTC", page), page


def test_attempts_read_in_plain_language(operator, jenny, hub):
    t0 = datetime(2026, 11, 2, 14, 1, 48, tzinfo=timezone.utc)
    accepted = add_delivery(hub, jenny, status="sent", attempts=[
        (t0, "retry", 429, 12.0, "Rate limited"), (t0 + timedelta(seconds=13), "sent", 202, None, None)])
    gave_up = add_delivery(hub, jenny, status="dead", attempts=[
        (t0 + timedelta(minutes=i), "retry", 503, 45.0, "Service Unavailable") for i in range(8)])
    refused = add_delivery(hub, jenny, connector="hubspot", status="dead", attempts=[
        (t0, "failed", 400, None, "Property hub_plan does not exist")])
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "Klaviyo asked us to wait 12 s (429); retried at 14:02, accepted." in page
    assert "Klaviyo accepted it (202)." in page and "took 120 ms" in page
    assert "gave up after 8 tries" in page
    assert "Klaviyo had a problem on its side (503); we waited 45 s; retried at 14:02, not accepted yet." in page
    assert "Klaviyo had a problem on its side (503); we waited 45 s; that was the last try." in page
    assert "HubSpot refused it (400). Not retried" in page
    assert "HubSpot said: “Property hub_plan does not exist”" in page
    for delivery_id in (accepted, gave_up, refused):
        assert f"delivery #{delivery_id}" in page


def test_raw_body_on_demand_has_secrets_and_card_data_removed(operator, client, hub):
    customer = {"id": "cus_card", "object": "customer", "email": "card@example.com", "name": "Card Holder",
                "created": 1_700_000_000, "metadata": {"api_key": "sk_live_leaked"},
                "invoice_settings": {"default_payment_method": {
                    "object": "payment_method", "card": {"number": "4242424242424242", "cvc": "314",
                                                         "last4": "4242", "exp_month": 4, "exp_year": 2031}}}}
    post(client, "stripe", stripe_event("customer.created", customer, event_id="evt_card"))
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        row_id = s.scalar(select(InboxEvent.id).where(InboxEvent.event_id == "evt_card"))
    body = operator.get(f"/sync-log/events/{row_id}/body")
    assert body.status_code == 200 and body.mimetype == "text/plain"
    shown = body.get_data(as_text=True)
    assert "4242424242424242" not in shown and "sk_live_leaked" not in shown and '"314"' not in shown
    assert '"last4": "4242"' in shown and "card@example.com" in shown
    event_page = operator.get(f"/sync-log/events/{row_id}").get_data(as_text=True)
    assert "4242424242424242" not in event_page and "sk_live_leaked" not in event_page
    assert "stripe-signature: [removed]" in event_page.lower()


# Lists --------------------------------------------------------------------------------------

def add_inbox_rows(hub, n: int, start: datetime, topic=lambda i: "orders/paid", status=lambda i: "processed",
                   source=lambda i: "shopify" if i % 2 else "stripe", subscriber_id=None) -> list[int]:
    with hub.storage.session() as s:
        rows = [InboxEvent(source=source(i), event_id=f"bulk-{i}", topic=topic(i), headers={}, body=b"{}",
                           received_at=start + timedelta(minutes=i), status=status(i), attempts=1, outcome=[],
                           origin="webhook", subscriber_id=subscriber_id,
                           error="boom" if status(i) == "failed" else None)
                for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def walk(client, url: str) -> tuple[list[int], list[str]]:
    """Follow 'Older' links from `url`; the event ids on every page, and the pages' texts."""
    ids, pages = [], []
    while url:
        html = client.get(url).get_data(as_text=True)
        pages.append(html)
        ids += [int(i) for i in re.findall(r'<td><a href="/sync-log/events/(\d+)">\d+</a></td>', html)]
        found = re.search(r'<a rel="next" href="([^"]+)">Older', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    return ids, pages


def test_recent_events_page_by_id_without_gaps_or_repeats(operator, hub):
    added = add_inbox_rows(hub, 120, datetime(2026, 10, 1, tzinfo=timezone.utc))
    ids, pages = walk(operator, "/sync-log/events")
    assert ids == sorted(added, reverse=True)
    assert len(pages) == 3


def test_recent_events_filter_by_source_topic_status_and_time(operator, hub):
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    added = add_inbox_rows(hub, 60, start, topic=lambda i: "refunds/create" if i % 10 == 0 else "orders/paid",
                           status=lambda i: "failed" if i % 7 == 0 else "processed")
    by_index = dict(enumerate(added))
    stripe, _ = walk(operator, "/sync-log/events?source=stripe")
    assert stripe == sorted((by_index[i] for i in range(60) if i % 2 == 0), reverse=True)
    refunds, _ = walk(operator, "/sync-log/events?topic=refunds/create")
    assert refunds == sorted((by_index[i] for i in range(0, 60, 10)), reverse=True)
    failed, _ = walk(operator, "/sync-log/events?status=failed")
    assert failed == sorted((by_index[i] for i in range(0, 60, 7)), reverse=True)
    window, _ = walk(operator, "/sync-log/events?since=2026-10-01T00:10&until=2026-10-01T00:20")
    assert window == sorted((by_index[i] for i in range(10, 20)), reverse=True)


def test_a_rare_filter_pages_through_the_log_in_bounded_windows(operator, hub, monkeypatch):
    monkeypatch.setattr(synclog, "SCAN_WINDOW", 25)
    added = add_inbox_rows(hub, 100, datetime(2026, 10, 1, tzinfo=timezone.utc),
                           topic=lambda i: "app/uninstalled" if i in (3, 90) else "orders/paid")
    ids, pages = walk(operator, "/sync-log/events?topic=app/uninstalled")
    assert ids == [added[90], added[3]]
    assert len(pages) == 4 and "looked through the log down to event" in pages[0]


def test_lists_mask_emails_and_phones(operator, jenny, hub):
    add_delivery(hub, jenny, status="dead", attempts=[
        (datetime.now(timezone.utc), "failed", 400, None, "Invalid email jenny.rosen@example.com")])
    for path in ("/sync-log/", "/sync-log/events", "/sync-log/deliveries"):
        page = operator.get(path).get_data(as_text=True)
        assert "jenny.rosen@example.com" not in page, path
        assert "j***@example.com" in page, path


def test_failing_deliveries_retry_one_then_all(operator, jenny, hub):
    now = datetime.now(timezone.utc)
    dead = [add_delivery(hub, jenny, status="dead", attempts=[(now, "retry", 503, 30.0, "down")] * 8)
            for _ in range(3)]
    waiting = add_delivery(hub, jenny, connector="hubspot", status="retrying",
                           attempts=[(now, "retry", 429, 60.0, "slow")])
    page = text_of(operator.get("/sync-log/deliveries"))
    assert "Retry all 3 deliveries the hub gave up on" in page
    assert "waiting to retry" in page and page.count("gave up after 8 tries") == 3
    response = operator.post("/sync-log/deliveries/retry", data={"csrf_token": token(operator), "delivery_id": dead[0]})
    assert response.status_code == 302
    assert "1 delivery is queued again" in text_of(operator.get(response.location))
    with hub.storage.session() as s:
        assert s.get(Delivery, dead[0]).status == "queued" and s.get(Delivery, dead[1]).status == "dead"
    assert hub.queues.queue("outbox").count >= 1  # a push was asked for at once
    operator.post("/sync-log/deliveries/retry", data={"csrf_token": token(operator), "all": "dead"})
    with hub.storage.session() as s:
        assert {s.get(Delivery, i).status for i in dead} == {"queued"}
        assert s.get(Delivery, waiting).status == "retrying"  # retrying on its own already


def test_failing_deliveries_paginate(operator, jenny, hub):
    now = datetime.now(timezone.utc)
    made = [add_delivery(hub, jenny, status="dead", attempts=[(now, "retry", 503, 1.0, "x")]) for _ in range(55)]
    first = operator.get("/sync-log/deliveries").get_data(as_text=True)
    older = re.search(r'<a rel="next" href="([^"]+)">Older', first).group(1).replace("&amp;", "&")
    second = operator.get(older).get_data(as_text=True)
    shown = [int(i) for page in (first, second)
             for i in re.findall(r'<article class="card delivery dead" id="delivery-(\d+)"', page)]
    assert shown == sorted(made, reverse=True)


def test_a_failed_event_is_replayed_by_an_operator(operator, client, hub):
    with FakeShopifyAdmin(token="shpat_e2e", owns_contracts=True).hold(SAMPLE_CONTRACT) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        admin.errors = INTERNAL_ERROR
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-replay")
        drain_inbox(hub.storage, hub.settings)
        page = text_of(operator.get("/sync-log/failed-events"))
        assert "subscription_contracts/create" in page and "Internal error" in page
        with hub.storage.session() as s:
            row_id = s.scalar(select(InboxEvent.id).where(InboxEvent.status == "failed"))
        admin.errors = None
        response = operator.post(f"/sync-log/events/{row_id}/replay",
                                 data={"csrf_token": token(operator), "next": "/sync-log/failed-events"})
    assert response.location == "/sync-log/failed-events"
    page = text_of(operator.get(response.location))
    assert f"Event #{row_id} was processed again: it worked this time." in page
    assert "No failed events" in page
    with hub.storage.session() as s:
        assert s.get(InboxEvent, row_id).status == "processed"
        assert s.scalar(select(Subscriber.email)) == "bob@biller.com"


def test_send_this_customer_again_makes_a_fresh_profile_delivery(operator, jenny, hub):
    page = operator.get(f"/sync-log/subscribers/{jenny}").get_data(as_text=True)
    assert "Send this customer to" not in page  # no tool is connected yet
    hub.settings.KLAVIYO_API_KEY = "pk_test"
    hub.settings.KLAVIYO_BASE_URL = "http://127.0.0.1:9"
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "Send this customer to Klaviyo again" in page
    for _ in range(2):
        response = operator.post(f"/sync-log/subscribers/{jenny}/resend",
                                 data={"csrf_token": token(operator), "connector": "klaviyo"})
        assert "will be sent to Klaviyo again" in text_of(operator.get(response.location))
    with hub.storage.session() as s:
        rows = s.scalars(select(Delivery).where(Delivery.kind == "profile", Delivery.connector == "klaviyo",
                                                Delivery.idempotency_key.like("%resent%"))).all()
        assert len(rows) == 2 and {r.status for r in rows} == {"queued"}
        assert rows[0].payload["email"] == "jenny.rosen@example.com"
        assert rows[0].payload["fields"]["plan"] == "Basic"
        assert rows[0].idempotency_key.startswith(f"profile:{jenny}:")
    response = operator.post(f"/sync-log/subscribers/{jenny}/resend",
                             data={"csrf_token": token(operator), "connector": "hubspot"})
    assert "Nothing was sent: HubSpot is not connected" in text_of(operator.get(response.location))


def test_viewers_see_no_action_buttons(viewer, jenny, hub):
    add_delivery(hub, jenny, status="dead", attempts=[(datetime.now(timezone.utc), "retry", 503, 1.0, "x")])
    for path in (f"/sync-log/subscribers/{jenny}", "/sync-log/deliveries", "/sync-log/failed-events"):
        html = viewer.get(path).get_data(as_text=True)
        assert ">Retry<" not in html and "Replay" not in html and "Send this customer" not in html, path


def test_overview_counts_what_needs_attention(operator, jenny, hub):
    add_delivery(hub, jenny, status="dead", attempts=[(datetime.now(timezone.utc), "retry", 503, 1.0, "x")])
    page = text_of(operator.get("/sync-log/"))
    assert "1 deliveries the hub gave up on" in page or "1 deliveries" in page
    assert "0 inbound events that failed" in page


def test_a_profile_owed_to_a_slower_tool_is_on_the_customer_s_page_and_counted_on_the_overview(operator, jenny, hub):
    with hub.storage.session() as s:
        s.add(ProfileDue(connector="hubspot", subscriber_id=jenny,
                         marked_at=datetime.now(timezone.utc) - timedelta(minutes=3)))
    hub.settings = replace(hub.settings, HUBSPOT_ACCESS_TOKEN="pat")
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "HubSpot is owed this customer's profile since" in page
    assert "planned from the customer as they are when its rate limit has room" in page
    overview = text_of(operator.get("/sync-log/"))
    assert "1 profile updates owed to HubSpot (planned as its rate limit has room)" in overview


def test_a_profile_owed_to_a_tool_switched_off_since_says_it_waits_for_the_tool(operator, jenny, hub):
    with hub.storage.session() as s:
        s.add(ProfileDue(connector="hubspot", subscriber_id=jenny, marked_at=datetime.now(timezone.utc)))
    assert not hub.settings.HUBSPOT_ACCESS_TOKEN
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "HubSpot is switched off, so the update is planned when it is on again" in page
    overview = text_of(operator.get("/sync-log/"))
    assert "1 profile updates owed to HubSpot (it is switched off: planned when it is on again)" in overview


def test_unknown_ids_are_404_pages(operator):
    for path in ("/sync-log/subscribers/999", "/sync-log/events/999", "/sync-log/events/999/body"):
        response = operator.get(path)
        assert response.status_code == 404, path


# Dashboard -----------------------------------------------------------------------------------

def test_dashboard_renders_every_figure_with_the_library_served_by_the_hub(operator, client, hub):
    shop = Shop(client)
    shop.customer("cus_d", "d@example.com", "Dee D", at=days_ago(60))
    shop.subscribe("cus_d", "sub_d", at=days_ago(60), amount=2900)
    drain_inbox(hub.storage, hub.settings)
    html = operator.get("/sync-log/dashboard").get_data(as_text=True)
    for canvas in ("stages", "mrr", "churn", "recovery", "reminders", "queues", "errors"):
        assert f'id="chart-{canvas}"' in html
    assert "Cohort retention" in html and "Current MRR: <strong>29.00 USD</strong>" in html
    script = re.search(r'<script src="(/static/vendor/chart\.umd\.min\.js)"', html).group(1)
    library = operator.get(script)
    assert library.status_code == 200 and b"Chart.js v4" in library.get_data()[:200]
    library.close()
    assert "cdn" not in html.lower()


def test_recent_events_do_not_scan_the_inbox(hub):
    """The queries behind the lists use the primary key or a partial index (SQLite's plan)."""
    if hub.storage.engine.dialect.name != "sqlite":
        pytest.skip("query plans are SQLite's")
    from sqlalchemy.dialects import sqlite

    with hub.storage.session() as s:
        for query in (select(InboxEvent).where(synclog.open_rows(), InboxEvent.status == "failed")
                      .order_by(InboxEvent.id.desc()).limit(51),
                      select(InboxEvent).where(InboxEvent.source + "" == "stripe", InboxEvent.id < 100,
                                               InboxEvent.id >= 50).order_by(InboxEvent.id.desc()).limit(51)):
            sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r) for r in s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN inbox_event" not in plan and "SEARCH inbox_event" in plan, plan
        # The partial index is used with the statuses as literals, as open_rows() renders them.
        compiled = select(func.count()).where(synclog.open_rows()).compile(dialect=sqlite.dialect())
        assert "IN ('pending', 'failed')" in str(compiled.statement.compile(
            dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}))


@contextmanager
def watched_shop(hub, base_url: str):
    """A Shopify stand-in the hub's hourly registration check (hub.jobs) can read."""
    from hub.context import current_hub, use_hub

    with FakeShopifyAdmin(token="shpat_dash", owns_contracts=True) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_dash"
        hub.settings.SHOPIFY_WEBHOOK_SECRET = "shpss_dash"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        hub.settings.HUB_BASE_URL = base_url
        before = current_hub()
        use_hub(hub)
        try:
            yield admin
        finally:
            use_hub(before)


def test_the_dashboard_says_when_shopify_dropped_a_webhook_subscription(operator, hub):
    """Shopify deletes a subscription after 8 failed deliveries; the hourly check shows it."""
    from hub import jobs
    from hub.ops import dashboard
    from hub.ops.registrations import OK, install_shopify

    with watched_shop(hub, "https://hub.example.com") as admin:
        assert install_shopify(hub.settings).status == OK
        assert jobs.registration_job() == {"problems": 0}
        dashboard._cache.clear()
        assert "Webhooks missing" not in operator.get("/sync-log/dashboard").get_data(as_text=True)
        admin.drop_subscription("ORDERS_PAID")
        assert jobs.registration_job() == {"problems": 1}
    dashboard._cache.clear()
    html = operator.get("/sync-log/dashboard").get_data(as_text=True)
    assert "Webhooks missing at Shopify:" in html and "orders/paid" in html and "hub install" in html


def test_the_dashboard_and_metrics_say_when_a_platform_signs_with_another_secret(operator, client, hub):
    """Recharge signing with a client secret the hub does not have: each webhook is refused
    with 401 and kept nowhere; Recharge retries each only for 48 hours, so support must hear
    of it at once."""
    from hub.ops import dashboard

    body = json.dumps(load_sample("recharge/charge_paid.json")).encode()
    headers = sign_recharge(body, "an-older-client-secret", "charge/paid")
    for _ in range(3):
        assert client.post("/webhooks/recharge", data=body, headers=headers).status_code == 401
    customer = {"id": "cus_right", "object": "customer", "email": "right@example.com", "created": 1_700_000_000}
    signed_right = post(client, "stripe", stripe_event("customer.created", customer, event_id="evt_right"))
    assert signed_right.status_code == 200  # the other platforms' webhooks still come in
    deadline = time.monotonic() + 30  # counted off the request's path, within a second when idle
    while not hub.queues.refused(["recharge"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    dashboard._cache.clear()
    page = text_of(operator.get("/sync-log/dashboard"))
    assert "Recharge webhooks refused: 3 in the last 24 hours" in page
    assert "(“X-Recharge-Hmac-Sha256 does not match the body”)" in page
    assert "another secret than RECHARGE_WEBHOOK_SECRET" in page and "Stripe webhooks refused" not in page
    assert 'hub_webhooks_refused_24h{source="recharge"} 3.0' in client.get("/metrics").get_data(as_text=True)
    with hub.storage.session() as s:  # and nothing of the refused ones was kept
        assert s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.source == "recharge")) == 0


def test_a_hub_on_a_loopback_address_raises_no_missing_webhooks_alarm(operator, hub):
    """The demo serves on 127.0.0.1: no platform can post there, so nothing is 'missing'."""
    from hub import jobs
    from hub.ops import dashboard

    with watched_shop(hub, "http://127.0.0.1:8000"):
        jobs.registration_job()
    dashboard._cache.clear()
    page = text_of(operator.get("/sync-log/dashboard"))
    assert "Webhooks missing" not in page
    assert "registrations at Shopify and Stripe are not checked" in page and "http://127.0.0.1:8000" in page


def test_a_replay_is_a_new_attempt_and_keeps_what_happened_before(operator, jenny, hub):
    with hub.storage.session() as s:
        row_id = s.scalar(select(InboxEvent.id).where(InboxEvent.topic == "customer.subscription.created"))
    created = "Subscription Basic: created (active), plan Basic, interval month, amount 29.00 USD"
    here = f"/sync-log/subscribers/{jenny}"
    said = []
    for _ in range(2):
        response = operator.post(f"/sync-log/events/{row_id}/replay",
                                 data={"csrf_token": token(operator), "next": here})
        replayed = text_of(operator.get(response.location))
        said.append(re.search(rf"Event #{row_id} was replayed[^.]*\.", replayed).group(0))
    # The rules ran again as of the event's time: the first replay says what that changed,
    # the second finds nothing left to change.
    assert re.fullmatch(rf"Event #{row_id} was replayed: The hub.s assessment: health score \d+ → \d+\.", said[0])
    assert said[1] == f"Event #{row_id} was replayed, no change."
    page = text_of(operator.get(here))
    assert re.search(r"Attempt 1, \d+ \w+ \d{4}, \d\d:\d\d UTC: processed What changed", page)
    assert re.search(r"Attempt 2, [^:]+:\d\d UTC: replayed, processed What changed .* health score \d+ → \d+", page)
    assert re.search(r"Attempt 3, [^:]+:\d\d UTC: replayed, no change", page)
    assert created in page  # the first attempt's changes, still there
    event_page = text_of(operator.get(f"/sync-log/events/{row_id}"))
    assert "Attempt 3" in event_page and created in event_page


def test_the_stage_reason_is_told_as_of_now_not_as_of_when_it_was_stored(operator, jenny, hub, client):
    """Her payment failed three days ago: the reason stored then said "today"."""
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "Stage At risk payment failed 3 days ago Health score" in page
    api = client.get(f"/api/subscribers/{jenny}", headers={"Authorization": f"Bearer {hub.settings.HUB_API_TOKEN}"})
    assert api.get_json()["subscriber"]["stage_reason"] == "payment failed 3 days ago"


def test_money_reads_as_money_and_order_lines_as_product_quantity_and_price(operator, jenny, client, hub):
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "Payment Failed — payment of 29.00 USD failed" in page and "2900" not in page
    post(client, "shopify", load_sample("shopify/orders_create.json"), topic="orders/create", webhook_id="wh-lines")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        owner = s.scalar(select(Subscriber.id).where(Subscriber.shopify_customer_id == "115310627314723954"))
    page = text_of(operator.get(f"/sync-log/subscribers/{owner}"))
    assert "→ 404.95 USD" in page
    assert "line items Aviator sunglasses × 1 at 89.99 USD; Lens Protection Plan (2 Year) × 1 at 19.99 USD" in page
    assert "{" not in page and "'title'" not in page


def test_a_shopify_subscription_shows_its_product_not_the_delivery_text(operator, client, hub):
    with FakeShopifyAdmin(token="shpat_plan", owns_contracts=True).hold(SAMPLE_CONTRACT) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_plan"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-plan")
        drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        bob = s.scalar(select(Subscriber.id).where(Subscriber.email == "bob@biller.com"))
    page = text_of(operator.get(f"/sync-log/subscribers/{bob}"))
    assert "Example T-Shirt active 49.98 CAD every 4 weeks" in page
    assert "Delivered every 4 weeks" not in page


def test_a_long_timeline_pages_by_keyset_without_gaps_or_repeats(operator, jenny, hub):
    added = add_inbox_rows(hub, 130, datetime.now(timezone.utc) - timedelta(days=1), subscriber_id=jenny)
    with hub.storage.session() as s:
        everyone = list(s.scalars(select(InboxEvent.id).where(InboxEvent.subscriber_id == jenny)))
    url, shown, pages = f"/sync-log/subscribers/{jenny}", [], 0
    while url:
        html = operator.get(url).get_data(as_text=True)
        pages += 1
        shown += [int(i) for i in re.findall(r'<li class="item event" id="event-(\d+)"', html)]
        found = re.search(r'<a rel="next" href="([^"]+)">Older', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(shown) == sorted(everyone) and len(shown) == len(set(shown))
    # Newest first across pages: her three webhooks of today, then the day-old ones.
    assert shown == sorted(set(everyone) - set(added), reverse=True) + sorted(added, reverse=True)
    assert pages >= 3


def test_customers_with_the_same_name_are_told_apart(operator, client, hub):
    shop = Shop(client)
    shop.customer("cus_pat1", "pat@example.com", "Pat Smith", at=days_ago(5))
    shop.customer("cus_pat2", "psmith@example.com", "Pat Smith", at=days_ago(5))
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        ids = sorted(s.scalars(select(Subscriber.id).where(Subscriber.last_name == "Smith")))
    html = operator.get("/sync-log/search?q=Pat+Smith").get_data(as_text=True)
    rows = [visible_text(r).strip() for r in re.findall(r"(?s)<tr><td>.*?</tr>", html)]
    assert len(rows) == 2 and rows[0] != rows[1]
    for subscriber_id in ids:  # each by a masked email and a short id
        assert any(f"p***@example.com #{subscriber_id} Pat Smith" in row for row in rows), rows
    assert "pat@example.com" not in html and "psmith@example.com" not in html


def test_cards_on_file_say_which_card_is_charged_and_which_was_removed(operator, jenny, hub):
    with hub.storage.session() as s:
        s.get(Subscriber, jenny).cards = {
            "stripe:pm_new": {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2031, "default": True},
            "stripe:pm_old": {"brand": "visa", "last4": "0005", "exp_month": None, "exp_year": None,
                              "default": False},
            "stripe:pm_named_first": {"default": True}}  # named the default before its card arrived
    page = text_of(operator.get(f"/sync-log/subscribers/{jenny}"))
    assert "Visa ending 4242, expires 3/2031 — the card charged" in page
    assert "Visa ending 0005, removed" in page
    assert "None/None" not in page and page.count(" ending ") == 2

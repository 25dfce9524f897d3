"""The sync log in a real browser (Debian's Chromium through Playwright) against a live hub.

Data comes in as a merchant's would: signed webhooks posted to the hub and drained by the
worker code; deliveries are pushed to a local stand-in of Klaviyo (which can throttle),
and a few delivery rows are written directly where a test needs a given history.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import connectors
from connectors.ratelimit import Limiter
from hub.models import Delivery, DeliveryAttempt, InboxEvent, Subscriber
from hub.ops import consent
from hub.sync import outbox
from hub.sync.inbox import drain_inbox
from hub.web import auth
from standins.klaviyo import FakeKlaviyo
from standins.shopify import INTERNAL_ERROR, FakeShopifyAdmin
from tests.hub.ops.test_consent import withdrawal_klaviyo_missed
from tests.hub.web.conftest import PASSWORD, add_staff
from tests.hub.web.shop import Shop, days_ago
from tests.samples import SAMPLE_CONTRACT, load_sample, post

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect


def log_in(page, email: str, password: str = PASSWORD):
    if not page.url.endswith("/login"):  # a refused login shows the form again
        page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Log in").click()
    return navigation.value


def search(page, query: str) -> None:
    page.get_by_role("searchbox").fill(query)
    page.get_by_role("button", name="Search").click()


@pytest.fixture
def klaviyo(hub):
    with FakeKlaviyo(api_key="pk_test_browser") as fake:
        hub.settings.KLAVIYO_API_KEY = "pk_test_browser"
        hub.settings.KLAVIYO_BASE_URL = fake.url
        yield fake


def push(hub, at: datetime) -> dict:
    """Push due Klaviyo deliveries as of `at`, as the worker's push job does. A fresh limiter
    each time: the test moves its clock past Klaviyo's Retry-After rather than sleeping."""
    return outbox.push_batch(hub.storage, hub.settings, "klaviyo", now=at, limiter=Limiter())


@pytest.fixture
def jenny(client, hub, klaviyo):
    """A subscriber whose profile Klaviyo first throttled (429, wait 12 s) then accepted,
    with one delivery the hub gave up on; returns (subscriber id, dead delivery id)."""
    shop = Shop(client)
    shop.customer("cus_jenny", "jenny.rosen@example.com", "Jenny Rosen", at=days_ago(45), phone="+15551234567")
    shop.subscribe("cus_jenny", "sub_jenny", at=days_ago(45), amount=2900, plan="Basic")
    shop.invoice("cus_jenny", "sub_jenny", "in_jenny_1", at=days_ago(15), paid=True)
    shop.invoice("cus_jenny", "sub_jenny", "in_jenny_2", at=days_ago(2), paid=False)
    drain_inbox(hub.storage, hub.settings)
    t0 = datetime.now(timezone.utc) + timedelta(seconds=2)  # every planned delivery is due by then
    klaviyo.fail(429, retry_after=12, times=1)
    push(hub, t0)
    push(hub, t0 + timedelta(seconds=13))
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber).where(Subscriber.email == "jenny.rosen@example.com"))
        mapping = connectors.load_mapping(hub.settings, "klaviyo")
        dead = Delivery(connector="klaviyo", kind="profile", subscriber_id=person.id,
                        idempotency_key="browser:dead-profile",
                        payload=outbox.profile_payload(person, outbox.profile_fields(person), mapping),
                        status="dead", attempts=8, next_attempt_at=t0, last_error="Service Unavailable",
                        created_at=t0 - timedelta(hours=5))
        s.add(dead)
        s.flush()
        for n in range(8):
            s.add(DeliveryAttempt(delivery_id=dead.id, at=t0 - timedelta(hours=5) + timedelta(minutes=n * 30),
                                  outcome="retry", http_status=503, latency_ms=31 + n, retry_after=15.0 * 3 ** n,
                                  message="Service Unavailable"))
        return person.id, dead.id


def test_an_operator_logs_in_finds_a_customer_and_reads_what_klaviyo_said(page, hub, jenny, screenshot):
    subscriber_id, _ = jenny
    add_staff(hub, "olive@shop.test", "operator")
    page.goto("/")  # a newcomer's first address: the sync log, which asks them to log in
    expect(page).to_have_url(re.compile(r"/login"))
    assert log_in(page, "olive@shop.test").status == 200
    expect(page.get_by_role("heading", name="Sync log")).to_be_visible()
    search(page, "jenny.rosen@example.com")
    expect(page).to_have_url(re.compile(f"/sync-log/subscribers/{subscriber_id}$"))
    expect(page.get_by_role("heading", name="Jenny Rosen")).to_be_visible()
    expect(page.get_by_text("jenny.rosen@example.com").first).to_be_visible()
    expect(page.get_by_text("29.00 USD per month")).to_be_visible()
    # An attempt's reason, in plain language.
    reason = page.get_by_text(re.compile(r"Klaviyo asked us to wait 12 s \(429\); retried at \d\d:\d\d, accepted\."))
    expect(reason.first).to_be_visible()
    expect(page.get_by_text("gave up after 8 tries").first).to_be_visible()
    # The raw body, loaded on demand, without the signature or anything secret.
    first_raw = page.locator("details.raw").last
    first_raw.locator("summary").click()
    expect(first_raw.locator("pre")).to_contain_text('"type": "customer.created"')
    assert "Loading" not in first_raw.locator("pre").inner_text()
    screenshot(page, "subscriber.png")


def test_an_operator_retries_a_dead_letter_and_sees_it_accepted(page, hub, jenny, klaviyo):
    subscriber_id, dead_id = jenny
    add_staff(hub, "olive@shop.test", "operator")
    log_in(page, "olive@shop.test")
    page.goto("/sync-log/deliveries?status=dead")
    card = page.locator(f"#delivery-{dead_id}")
    expect(card).to_contain_text("gave up after 8 tries")
    card.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status").first).to_contain_text("1 delivery is queued again")
    with hub.storage.session() as s:
        assert s.get(Delivery, dead_id).status == "queued"
    assert push(hub, datetime.now(timezone.utc))["sent"] >= 1  # what the worker does on the push job
    page.goto(f"/sync-log/subscribers/{subscriber_id}")
    retried = page.locator(f"#delivery-{dead_id}")
    expect(retried.locator(".badge")).to_contain_text("accepted")
    expect(retried).to_contain_text("Klaviyo accepted it")
    assert klaviyo.profile("jenny.rosen@example.com") is not None


def test_an_operator_replays_a_failed_event(page, client, hub):
    add_staff(hub, "olive@shop.test", "operator")
    with FakeShopifyAdmin(token="shpat_browser", owns_contracts=True).hold(SAMPLE_CONTRACT) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_browser"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        admin.errors = INTERNAL_ERROR
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-browser-replay")
        drain_inbox(hub.storage, hub.settings)
        admin.errors = None
        log_in(page, "olive@shop.test")
        page.get_by_role("link", name="Failed events").click()
        row = page.locator("tr", has_text="subscription_contracts/create")
        expect(row).to_contain_text("Internal error")
        row.get_by_role("button", name="Replay").click()
        expect(page.get_by_role("status").first).to_contain_text("it worked this time")
    expect(page.get_by_text("No failed events.")).to_be_visible()
    with hub.storage.session() as s:
        assert s.scalar(select(InboxEvent.status)) == "processed"
    search(page, "bob@biller.com")
    expect(page.get_by_role("heading", name=re.compile("Bob Biller|bob@biller.com"))).to_be_visible()
    # The failed attempt stays in the event's history, under the replay that worked.
    event = page.locator("li.item.event", has_text="subscription_contracts/create")
    expect(event.locator(".attempt-head").first).to_have_text(re.compile(r"Attempt 1, .*: failed — .*Internal error"))
    expect(event.locator(".attempt-head").nth(1)).to_have_text(re.compile(r"Attempt 2, .*: replayed, processed"))
    expect(event).to_contain_text("Subscription Example T-Shirt: created (active)")
    # The subscription is named by its product, not by the selling plan's delivery text.
    row = page.locator("section[aria-labelledby=subs-h] tbody tr").first
    expect(row).to_contain_text("Example T-Shirt")
    expect(row).to_contain_text("49.98 CAD every 4 weeks")
    expect(page.get_by_text("Delivered every 4 weeks")).to_have_count(0)


def test_replaying_a_processed_event_says_it_changed_nothing_and_keeps_the_first_attempt(page, hub, jenny):
    subscriber_id, _ = jenny
    add_staff(hub, "olive@shop.test", "operator")
    log_in(page, "olive@shop.test")
    with hub.storage.session() as s:
        row_id = s.scalar(select(InboxEvent.id).where(InboxEvent.topic == "customer.created"))
    page.goto(f"/sync-log/events/{row_id}")
    for _ in range(2):  # the first replay may re-assess the person as of the event's time
        page.get_by_role("button", name="Replay this event").click()
    expect(page.get_by_role("status").first).to_have_text(f"Event #{row_id} was replayed, no change.")
    expect(page.get_by_text(re.compile(r"Attempt 3, .*: replayed, no change"))).to_be_visible()
    page.goto(f"/sync-log/subscribers/{subscriber_id}")
    event = page.locator(f"#event-{row_id}")
    expect(event.locator(".attempt-head")).to_have_count(3)
    expect(event).to_contain_text("Profile: phone +15551234567, first name Jenny, last name Rosen")


def test_the_stage_reason_and_money_read_as_of_now_and_as_money(page, client, hub, jenny):
    subscriber_id, _ = jenny
    post(client, "shopify", load_sample("shopify/orders_create.json"), topic="orders/create", webhook_id="wh-b-lines")
    drain_inbox(hub.storage, hub.settings)
    add_staff(hub, "victor@shop.test", "viewer")
    log_in(page, "victor@shop.test")
    page.goto(f"/sync-log/subscribers/{subscriber_id}")
    # Her second invoice failed two days ago; the reason stored then said "today".
    expect(page.locator(".stage-reason")).to_have_text("payment failed 2 days ago")
    expect(page.get_by_text("payment of 29.00 USD failed").first).to_be_visible()
    expect(page.get_by_text("2900 USD")).to_have_count(0)
    search(page, "#9999")
    lines = page.get_by_text(re.compile(r"line items Aviator sunglasses × 1 at 89\.99 USD; Lens Protection Plan"))
    expect(lines).to_be_visible()
    expect(page.locator("li.item.event").first).not_to_contain_text("{'")


def test_a_long_timeline_pages_by_keyset(page, hub, jenny):
    subscriber_id, _ = jenny
    start = datetime.now(timezone.utc) - timedelta(days=3)
    with hub.storage.session() as s:
        s.add_all([InboxEvent(source="stripe", event_id=f"evt_old_{n}", topic="customer.updated", headers={},
                              body=b"{}", received_at=start + timedelta(minutes=n), status="processed", attempts=1,
                              outcome=[], origin="webhook", subscriber_id=subscriber_id) for n in range(70)])
    add_staff(hub, "victor@shop.test", "viewer")
    log_in(page, "victor@shop.test")
    page.goto(f"/sync-log/subscribers/{subscriber_id}")
    first = page.locator("li.item").evaluate_all("items => items.map(i => i.id)")
    page.get_by_role("link", name="Older").click()
    expect(page).to_have_url(re.compile(r"before="))
    second = page.locator("li.item").evaluate_all("items => items.map(i => i.id)")
    assert len(first) == 50 and second and not set(first) & set(second)
    expect(page.get_by_role("link", name="Older")).to_have_count(0)  # the last page
    page.get_by_role("link", name="« Newest").click()
    assert page.locator("li.item").evaluate_all("items => items.map(i => i.id)") == first


def test_same_name_customers_are_told_apart(page, client, hub):
    shop = Shop(client)
    shop.customer("cus_pat1", "pat@example.com", "Pat Smith", at=days_ago(5))
    shop.customer("cus_pat2", "psmith@example.com", "Pat Smith", at=days_ago(5))
    drain_inbox(hub.storage, hub.settings)
    add_staff(hub, "victor@shop.test", "viewer")
    log_in(page, "victor@shop.test")
    search(page, "Pat Smith")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(2)
    texts = rows.all_inner_texts()
    assert texts[0] != texts[1] and all(re.search(r"p\*\*\*@example\.com #\d+", t) for t in texts), texts


SIGN_UPS = 26


def sign_up_months() -> int:
    """How many calendar months the weekly sign-ups of six_months_of_a_shop fall in today
    (six or seven, depending on the day of the month)."""
    return len({days_ago(182 - n * 7 + 0.5).strftime("%Y-%m") for n in range(SIGN_UPS)})


def six_months_of_a_shop(client, hub):
    """Sign-ups every week for six months, plan changes, failed and recovered payments, cancellations."""
    shop = Shop(client)
    plans = [(1900, "Starter"), (2900, "Basic"), (4900, "Plus")]
    for n in range(SIGN_UPS):
        customer, sub = f"cus_s{n}", f"sub_s{n}"
        start = days_ago(182 - n * 7 + 0.5)
        amount, plan = plans[n % 3]
        shop.customer(customer, f"customer{n}@example.com", f"Customer {n}", at=start)
        shop.subscribe(customer, sub, at=start, amount=amount, plan=plan)
        age = 182 - n * 7
        if n % 4 == 1 and age > 40:
            shop.change_plan(customer, sub, at=days_ago(age - 30), amount=4900, plan="Plus")
        if n % 5 == 2 and age > 30:
            shop.invoice(customer, sub, f"in_s{n}", at=days_ago(age - 25), paid=False)
            if n % 2:
                shop.invoice(customer, sub, f"in_s{n}", at=days_ago(age - 29), paid=True)
        if n % 6 == 3 and age > 50:
            shop.cancel(customer, sub, at=days_ago(age - 45),
                        reason="payment_failed" if n % 12 == 3 else "cancellation_requested")
    drain_inbox(hub.storage, hub.settings)


CANVAS_INK = """(canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) ink++; }
  const values = canvas.chart.data.datasets.reduce(
    (n, ds) => n + ds.data.filter((v) => v !== null && v !== 0).length, 0);
  return {width: canvas.width, height: canvas.height, ink: ink, values: values};
}"""


def a_week_of_pushes(hub, klaviyo):
    """The planned deliveries pushed over the last ten days, Klaviyo failing some requests."""
    now = datetime.now(timezone.utc)
    with hub.storage.session() as s:
        for d in s.scalars(select(Delivery)):
            d.next_attempt_at = now - timedelta(days=10 - d.id % 10)
    klaviyo.fail(503, fraction=1 / 4)
    for days in range(10, -1, -1):
        push(hub, now - timedelta(days=days) + timedelta(seconds=1))
    with hub.storage.session() as s:  # and a few still waiting, two given up on
        for n, status in enumerate(("queued", "queued", "queued", "retrying", "dead", "dead")):
            s.add(Delivery(connector="klaviyo", kind="profile", subscriber_id=n + 1, idempotency_key=f"waiting:{n}",
                           payload={"subscriber_id": n + 1, "email": f"customer{n}@example.com", "fields": {}},
                           status=status, attempts=8 if status == "dead" else 0,
                           next_attempt_at=now + timedelta(minutes=5)))


def test_the_dashboard_draws_its_plots(page, client, hub, klaviyo, screenshot):
    six_months_of_a_shop(client, hub)
    a_week_of_pushes(hub, klaviyo)
    with FakeKlaviyo(api_key="pk_drift") as drifting:  # Ada withdrew at Shopify; Klaviyo missed it
        withdrawal_klaviyo_missed(hub, drifting)
        assert consent.run(hub, limiter=Limiter()).still_subscribed == 1
    add_staff(hub, "victor@shop.test", "viewer")
    refused = []  # what the page's Content-Security-Policy blocked, as Chromium reports it
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    log_in(page, "victor@shop.test")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("html[data-charts=drawn]")).to_have_count(1)
    assert refused == []
    shade = page.locator("table.cohorts td.heat").first.evaluate("td => getComputedStyle(td).getPropertyValue('--pct')")
    assert shade.strip() != ""
    for name in ("stages", "mrr", "churn", "recovery", "reminders", "queues", "errors"):
        drawn = page.locator(f"#chart-{name}").evaluate(CANVAS_INK)
        assert drawn["width"] > 100 and drawn["height"] > 100, name
        assert drawn["ink"] > 2000, f"chart {name} looks empty: {drawn}"
        assert drawn["values"] > 0, f"chart {name} has nothing to plot"
    churn = page.locator("#chart-churn").evaluate("c => c.chart.data.datasets.map(d => [d.label, d.data])")
    assert [label for label, _ in churn] == ["Churn rate", "Cancelled: voluntary", "Cancelled: failed payment"]
    cancelled = [n for n in range(SIGN_UPS) if n % 6 == 3 and 182 - n * 7 > 50]
    assert (sum(churn[1][1]), sum(churn[2][1])) == (
        len([n for n in cancelled if n % 12 != 3]), len([n for n in cancelled if n % 12 == 3]))
    # One row per month with sign-ups: a cohort each.
    expect(page.locator("table.cohorts tbody tr")).to_have_count(sign_up_months())
    expect(page.get_by_text(re.compile(r"Current MRR: \d+\.\d\d USD"))).to_be_visible()
    revenue = page.locator("table.revenue-table")
    expect(revenue.get_by_role("columnheader", name="Net revenue retention")).to_be_visible()
    expect(revenue.locator("tbody tr")).to_have_count(page.locator("#chart-mrr").evaluate(
        "c => c.chart.data.labels.length"))
    expect(revenue.locator("tbody td", has_text=re.compile(r"^\d+(\.\d+)?%$")).first).to_be_visible()
    drift = page.get_by_role("alert").filter(has_text="withdrew marketing consent")
    expect(drift).to_contain_text("1 person withdrew marketing consent but a tool still has them subscribed")
    screenshot(page, "dashboard.png")
    drift.get_by_role("link", name="See who").click()
    expect(page.get_by_role("heading", name="Consent drift")).to_be_visible()
    [row] = page.locator("table.consent-drift tbody tr").all()
    expect(row).to_contain_text("unsubscribed at Shopify since")
    expect(row).to_contain_text("Klaviyo: subscribed since")
    expect(row).not_to_contain_text("ada@example.com")  # masked
    screenshot(page, "drift.png")


AXES_AND_ZERO = """(canvas) => {
  const chart = canvas.chart;
  const sideways = Object.values(chart.scales).filter((scale) => scale.axis === "y");
  const untitled = sideways.length > 1
    ? sideways.filter((scale) => !(scale.options.title.display && scale.options.title.text))
    : [];
  let zeroInk = null;
  if (canvas.id === "chart-queues") {
    const bar = chart.getDatasetMeta(chart.data.datasets.length - 1).data[0];
    const ratio = chart.currentDevicePixelRatio;
    const x = Math.round((bar.x + 4) * ratio), y = Math.round((bar.y - 7) * ratio);
    const data = canvas.getContext('2d').getImageData(x, y, Math.round(40 * ratio), Math.round(14 * ratio)).data;
    zeroInk = 0;
    for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) zeroInk++; }
  }
  return {untitled: untitled.map((scale) => scale.id), zeroInk: zeroInk};
}"""


def test_the_dashboard_draws_every_chart_shows_an_empty_queue_as_zero_and_labels_both_axes(page, client, hub, klaviyo):
    six_months_of_a_shop(client, hub)
    now = datetime.now(timezone.utc)
    while push(hub, now + timedelta(seconds=1))["sent"]:  # Klaviyo takes everything: nothing waits
        pass
    add_staff(hub, "victor@shop.test", "viewer")
    log_in(page, "victor@shop.test")
    page.goto("/sync-log/dashboard")
    expect(page.locator("html[data-charts=drawn]")).to_have_count(1)
    for name in ("stages", "mrr", "churn", "recovery", "reminders", "queues", "errors"):
        drawn = page.locator(f"#chart-{name}").evaluate(CANVAS_INK)
        assert drawn["ink"] > 2000, f"chart {name} looks empty: {drawn}"
        checked = page.locator(f"#chart-{name}").evaluate(AXES_AND_ZERO)
        assert checked["untitled"] == [], f"chart {name} has an axis without a title: {checked}"
    zero = page.locator("#chart-queues").evaluate(AXES_AND_ZERO)
    assert zero["zeroInk"] > 20, f"the empty Klaviyo queue is not written as 0: {zero}"
    expect(page.locator(".queue-now")).to_have_text("Waiting now: Klaviyo 0 (0 given up).")


def test_a_viewer_reads_but_cannot_retry(page, hub, jenny):
    subscriber_id, dead_id = jenny
    add_staff(hub, "victor@shop.test", "viewer")
    log_in(page, "victor@shop.test")
    page.goto("/sync-log/deliveries")
    expect(page.locator(f"#delivery-{dead_id}")).to_contain_text("gave up after 8 tries")
    expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
    page.goto(f"/sync-log/subscribers/{subscriber_id}")
    expect(page.get_by_role("button", name=re.compile("Retry|Replay|Send this customer"))).to_have_count(0)
    # Even a hand-made request with the page's own CSRF token is refused.
    status = page.evaluate("""async (id) => {
        const token = document.querySelector('input[name=csrf_token]').value;
        const body = new URLSearchParams({csrf_token: token, delivery_id: id});
        return (await fetch('/sync-log/deliveries/retry', {method: 'POST', body})).status;
    }""", str(dead_id))
    assert status == 403
    with hub.storage.session() as s:
        assert s.get(Delivery, dead_id).status == "dead"


def test_a_wrong_password_is_refused_and_the_tenth_in_a_minute_is_slowed(page, hub):
    add_staff(hub, "olive@shop.test", "operator")
    for attempt in range(auth.MAX_FAILURES):
        response = log_in(page, "olive@shop.test", "not my password")
        assert response.status == 401, attempt
        expect(page.get_by_role("alert")).to_contain_text("do not match a staff account")
    response = log_in(page, "olive@shop.test", PASSWORD)  # the tenth attempt in the minute
    assert response.status == 429
    assert int(response.headers["retry-after"]) > 0
    expect(page.get_by_role("alert")).to_contain_text("Too many failed attempts. Wait")
    page.goto("/sync-log/")
    expect(page).to_have_url(re.compile("/login"))

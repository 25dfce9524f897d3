"""Poison rows: a signed webhook the drain cannot read fails alone and never stops the drain,
the cron backstop, `hub replay` or a worker's start; every later webhook is still applied."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from hub import jobs
from hub.cli import main
from hub.models import InboxEvent, Subscriber
from hub.sync.inbox import drain_inbox
from tests.hub.sync.test_inbox import customer_event, work
from tests.hub.web.conftest import add_staff, log_in
from tests.samples import post, signed, stripe_event
from tests.test_cli import cli_env  # noqa: F401 (fixture)

DEPTH = 1_100


def nested(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def deep_event_body() -> bytes:
    """A customer.created whose object is nested past any parser's depth; a long number
    beside it sends the whole body to the standard library's parser (2.2 KB)."""
    body = (f'{{"id": "evt_deep", "object": "event", "type": "customer.created", "created": 1700000000, '
            f'"data": {{"object": {nested()}}}, "request": {{"id": 123456789012345678901}}}}')
    return body.encode()


def deep_card_body() -> bytes:
    """A payment_method.updated whose card brand is nested past any parser's depth."""
    card = {"id": "pm_deep", "object": "payment_method", "customer": "cus_deep",
            "card": {"brand": "BRAND", "last4": "4242", "exp_month": 1, "exp_year": 2030}}
    text = json.dumps(stripe_event("payment_method.updated", card, event_id="evt_deep_card",
                                   created=1_700_000_000))
    return text.replace('"BRAND"', nested()).encode()


def overflowing_created() -> bytes:
    text = json.dumps(customer_event(event_id="evt_huge_created"))
    return text.replace('"created": 1700000000', '"created": 1e400', 1).encode()


def overflowing_id() -> bytes:
    text = json.dumps(customer_event(event_id="EVENT_ID"))
    return text.replace('"EVENT_ID"', "9" * 400).encode()


def overflowing_amount() -> bytes:
    invoice = {"id": "in_huge", "object": "invoice", "customer": "cus_huge", "customer_email": "huge@example.com",
               "amount_paid": 1, "currency": "usd", "status": "paid"}
    text = json.dumps(stripe_event("invoice.paid", invoice, event_id="evt_huge_amount", created=1_700_000_000))
    return text.replace('"amount_paid": 1', '"amount_paid": ' + "9" * 400).encode()


# Each read by a different part of the drain: the body's parse, the model's write, the
# event's time, its identification, an integer column.
POISON = {"deep event": deep_event_body, "deep card": deep_card_body,
          "created 1e400": overflowing_created, "id of 400 digits": overflowing_id,
          "amount of 400 digits": overflowing_amount}
ALONE = ("deep event", "created 1e400", "id of 400 digits")


def rows_by_body(hub) -> dict[bytes, InboxEvent]:
    with hub.storage.session() as s:
        return {bytes(r.body): r for r in s.scalars(select(InboxEvent))}


def emails(hub) -> set[str]:
    with hub.storage.session() as s:
        return set(s.scalars(select(Subscriber.email)))


@pytest.mark.parametrize("make", [POISON[name] for name in ALONE], ids=ALONE)
def test_a_poison_row_fails_alone_and_the_next_webhook_is_applied(client, hub, make):
    body = make()
    assert post(client, "stripe", body).status_code == 200
    post(client, "stripe", customer_event(event_id="evt_after", email="after@example.com"))
    work(hub)
    rows = rows_by_body(hub)
    assert rows[body].status == "failed" and rows[body].error
    after = [r for r in rows.values() if r.event_id == "evt_after"]
    assert [r.status for r in after] == ["processed"]
    assert "after@example.com" in emails(hub)


def test_poison_rows_in_one_batch_with_good_ones_fail_each_alone(client, hub):
    for n, make in enumerate(POISON.values()):
        post(client, "stripe", customer_event(event_id=f"evt_good_{n}", email=f"good{n}@example.com",
                                              customer_id=f"cus_good_{n}"))
        post(client, "stripe", make())
    counts = drain_inbox(hub.storage, hub.settings, batch_size=100)
    assert counts == {"processed": len(POISON), "ignored": 0, "failed": len(POISON)}
    assert emails(hub) == {f"good{n}@example.com" for n in range(len(POISON))}


def crash_with(error):
    def normalizer(payload, envelope):
        raise error
    return normalizer


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   OverflowError("int too large to convert to float")],
                         ids=["RecursionError", "OverflowError"])
def test_a_normalizer_crash_of_any_kind_fails_the_row_alone(client, hub, monkeypatch, error):
    from webhooks.stripe import webhook as stripe

    monkeypatch.setitem(stripe.TOPICS, "customer.deleted", crash_with(error))
    post(client, "stripe", stripe_event("customer.deleted", {"id": "cus_x", "object": "customer"},
                                        event_id="evt_crash"))
    post(client, "stripe", customer_event(event_id="evt_after", email="after@example.com"))
    counts = drain_inbox(hub.storage, hub.settings)
    assert counts == {"processed": 1, "ignored": 0, "failed": 1}
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent).where(InboxEvent.event_id == "evt_crash"))
        assert row.status == "failed" and row.error.startswith(type(error).__name__)


def test_the_cron_backstop_drains_past_a_poison_row(client, hub):
    post(client, "stripe", deep_event_body())
    post(client, "stripe", customer_event(event_id="evt_after", email="after@example.com"))
    counts = jobs.backstop_job()
    assert counts["failed"] == 1 and counts["processed"] == 1
    assert "after@example.com" in emails(hub)


def test_a_worker_starts_and_drains_past_a_poison_row(cli_env, client, hub, monkeypatch):  # noqa: F811
    monkeypatch.setattr("hub.process.tune_gc", lambda: None)  # the test process's collector stays as it is
    post(client, "stripe", deep_event_body())
    post(client, "stripe", customer_event(event_id="evt_after", email="after@example.com"))
    result = cli_env.invoke(main, ["worker", "--burst", "--no-cron"])
    assert result.exit_code == 0, result.output
    assert "drained at start: {'processed': 1, 'ignored': 0, 'failed': 1}" in result.output
    assert "after@example.com" in emails(hub)


def test_replay_of_failed_rows_goes_past_a_poison_row(cli_env, client, hub):  # noqa: F811
    for make in POISON.values():
        post(client, "stripe", make())
    post(client, "stripe", customer_event(event_id="evt_later", email="later@example.com"))
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:  # the good row failed earlier (say, a bug since fixed)
        s.execute(update(InboxEvent).where(InboxEvent.event_id == "evt_later").values(status="failed"))
        s.commit()
    result = cli_env.invoke(main, ["replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert result.output.count(": failed — ") == len(POISON)
    assert "customer.created: processed" in result.output
    assert "later@example.com" in emails(hub)


@pytest.mark.parametrize("event", [
    {"object": "event", "type": "customer.created", "created": 1_700_000_000,
     "data": {"object": {"id": "cus_1", "email": "noid@example.com"}}},
    {"id": "evt_no_time", "object": "event", "type": "customer.created", "created": "soon",
     "data": {"object": {"id": "cus_2", "email": "notime@example.com"}}},
], ids=["no id", "unreadable created"])
def test_an_event_that_cannot_be_identified_is_failed_and_listed(client, hub, event):
    post(client, "stripe", event)
    counts = drain_inbox(hub.storage, hub.settings)
    assert counts == {"processed": 0, "ignored": 0, "failed": 1}
    [row] = rows_by_body(hub).values()
    assert row.status == "failed" and row.error
    add_staff(hub, "vera@shop.test")
    log_in(client, "vera@shop.test")
    page = client.get("/sync-log/failed-events").get_data(as_text=True)
    assert f'id="event-{row.id}"' in page


@pytest.mark.parametrize("make", [deep_event_body, deep_card_body], ids=["deep event", "deep card"])
def test_the_page_of_a_poison_row_opens_with_its_error_and_body(client, hub, make):
    post(client, "stripe", make())
    drain_inbox(hub.storage, hub.settings)
    [row] = rows_by_body(hub).values()
    add_staff(hub, "vera@shop.test")
    log_in(client, "vera@shop.test")
    page = client.get(f"/sync-log/events/{row.id}")
    assert page.status_code == 200 and "failed" in page.get_data(as_text=True)
    body = client.get(f"/sync-log/events/{row.id}/body")
    assert body.status_code == 200 and body.get_data(as_text=True).count("[") >= DEPTH


def test_healthz_says_503_with_a_count_when_a_pending_row_is_older_than_the_threshold(client, hub):
    post(client, "stripe", customer_event())
    assert client.get("/healthz").status_code == 200  # a fresh backlog is work, not a fault
    hub.settings.HUB_STUCK_PENDING_SECONDS = 60
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).values(received_at=datetime.now(timezone.utc) - timedelta(seconds=61)))
        s.commit()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["inbox_stuck"] == 1
    drain_inbox(hub.storage, hub.settings)
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["inbox_stuck"] == 0


def test_an_absurd_shopify_triggered_at_is_stored_with_the_arrival_time(client, hub):
    customer = {"id": 207119551, "email": "absurd@example.com", "first_name": "Ab", "last_name": "Surd",
                "created_at": "2026-01-01T10:00:00-05:00", "phone": None}
    before = datetime.now(timezone.utc)
    headers, body = signed("shopify", customer, topic="customers/update",
                           triggered_at="12345678901234567890")
    response = client.post("/webhooks/shopify", data=body, headers=headers)
    assert response.status_code == 200
    [row] = rows_by_body(hub).values()
    assert before <= row.triggered_at <= datetime.now(timezone.utc)
    drain_inbox(hub.storage, hub.settings)
    assert "absurd@example.com" in emails(hub)


def test_a_crash_in_the_work_done_once_per_batch_fails_one_row_and_the_drain_goes_on(client, hub, monkeypatch):
    from hub.sync import outbox

    def crashes_on_poison(unit, settings):
        if any(unit.session.get(Subscriber, i).email == "poison@example.com" for i in unit.dirty):
            raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")
        return flush(unit, settings)

    flush = outbox.flush_pending_profiles
    monkeypatch.setattr(outbox, "flush_pending_profiles", crashes_on_poison)
    for n, email in enumerate(["first@example.com", "poison@example.com", "last@example.com"]):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=email, customer_id=f"cus_{n}"))
    counts = drain_inbox(hub.storage, hub.settings)
    assert counts == {"processed": 2, "ignored": 0, "failed": 1}
    assert emails(hub) == {"first@example.com", "last@example.com"}
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent).where(InboxEvent.event_id == "evt_1"))
        assert row.status == "failed" and row.error.startswith("RecursionError") and row.attempts == 1


def test_an_event_id_the_database_cannot_take_is_stored_not_refused(client, hub):
    body = json.dumps(customer_event(event_id="EVENT_ID", email="odd@example.com")).replace(
        '"EVENT_ID"', '"evt_\\udc00"').encode()
    assert post(client, "stripe", body).status_code == 200
    assert post(client, "stripe", body).get_json()["duplicate"] is True  # Stripe's retry
    drain_inbox(hub.storage, hub.settings)
    assert "odd@example.com" in emails(hub)


NASTY_BODIES = [deep_event_body(), overflowing_created(), overflowing_id(), nested().encode(),
                json.dumps(customer_event(event_id="evt_" + "x" * 300)).encode(),
                json.dumps(customer_event(event_id="EVENT_ID")).replace('"EVENT_ID"', '"evt_\\udc00"').encode(),
                json.dumps({**customer_event(), "created": 10 ** 20, "api_version": [[1]]}).encode(),
                json.dumps({"id": "ev_1", "event_type": "T" * 300, "occurred_at": 10 ** 20,
                            "api_version": "v" * 100}).encode()]
NASTY_HEADERS = [{"X-Shopify-Triggered-At": "12345678901234567890"}, {"X-Shopify-Triggered-At": "1e400"},
                 {"X-Shopify-Triggered-At": "9" * 400}, {"X-Shopify-Event-Id": "9" * 400},
                 {"X-Shopify-Topic": "t" * 300, "X-Shopify-Shop-Domain": "s" * 300,
                  "X-Shopify-API-Version": "v" * 300}]


def fits_the_inbox(envelope) -> bool:
    """What InboxEvent's columns take on any database."""
    return (len(envelope.event_id) <= 255 and envelope.event_id.encode() and len(envelope.topic) <= 100
            and all(v is None or (isinstance(v, str) and len(v) <= width) and v.encode()
                    for v, width in ((envelope.shop, 255), (envelope.api_version, 40)))
            and (envelope.triggered_at is None or isinstance(envelope.triggered_at, datetime)))


@pytest.mark.parametrize("source", ["shopify", "stripe", "chargebee"])
def test_describe_never_raises_and_its_envelope_always_fits_the_inbox(source):
    from webhooks import get_source

    describe = get_source(source).describe
    for body in NASTY_BODIES:
        assert fits_the_inbox(describe({}, body)), body[:80]
    for headers in NASTY_HEADERS:
        assert fits_the_inbox(describe(headers, b"{}")), headers
